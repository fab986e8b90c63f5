"""MESHDESK_TEST_DATA_ROUTES parses into {advertised: dialled}, or fails in one line that names it."""

from __future__ import annotations

import pytest

from meshdesk.core.data_routes import DataRoutesError, parse_data_routes, routed


@pytest.mark.parametrize("text, routes", [
    ("", {}),
    ("  ", {}),
    ("127.0.0.1:5000=127.0.0.1:6000", {("127.0.0.1", 5000): ("127.0.0.1", 6000)}),
    (" 10.0.0.2:1=127.0.0.1:2 , host.lan:65535=[::1]:3",
     {("10.0.0.2", 1): ("127.0.0.1", 2), ("host.lan", 65535): ("::1", 3)}),
])
def test_routes_parse(text, routes):
    assert parse_data_routes(text) == routes


@pytest.mark.parametrize("text, says", [
    ("127.0.0.1:5000", "'127.0.0.1:5000' is not HOST:PORT=HOST:PORT"),
    ("127.0.0.1:5000=127.0.0.1", "'127.0.0.1' is not HOST:PORT"),
    ("127.0.0.1:5000=:6000", "':6000' is not HOST:PORT"),
    ("127.0.0.1:0=127.0.0.1:6000", "'127.0.0.1:0' is not HOST:PORT"),
    ("127.0.0.1:70000=127.0.0.1:6000", "'127.0.0.1:70000' is not HOST:PORT"),
    ("127.0.0.1:x=127.0.0.1:6000", "'127.0.0.1:x' is not HOST:PORT"),
    ("a:1=b:2,", "'' is not HOST:PORT=HOST:PORT"),
    ("a:1=b:2,a:1=c:3", "a:1 is routed twice"),
])
def test_a_malformed_value_fails_in_one_line_that_names_the_variable(text, says):
    with pytest.raises(DataRoutesError) as raised:
        parse_data_routes(text)
    assert str(raised.value) == f"MESHDESK_TEST_DATA_ROUTES: {says}"


def test_only_a_routed_address_is_dialled_elsewhere():
    routes = parse_data_routes("127.0.0.1:5000=127.0.0.1:6000")
    assert routed(("127.0.0.1", 5000), routes) == ("127.0.0.1", 6000)
    assert routed(["127.0.0.1", 5000], routes) == ("127.0.0.1", 6000)  # as a record's JSON has it
    assert routed(("127.0.0.1", 5001), routes) == ("127.0.0.1", 5001)
    assert routed(("10.0.0.1", 5000), routes) == ("10.0.0.1", 5000)
