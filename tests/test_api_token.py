"""HOME/api-token: made once, kept across starts, readable by its owner only."""

from __future__ import annotations

import os
import stat

import pytest

from meshdesk.adapters.api_token import load_or_create_token, read_token, token_path

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_a_new_token_is_random_kept_and_private(tmp_path):
    token = load_or_create_token(tmp_path)
    assert len(token) >= 32 and read_token(tmp_path) == token
    assert mode(token_path(tmp_path)) == 0o600
    assert load_or_create_token(tmp_path) == token  # the next start keeps it
    assert load_or_create_token(tmp_path / ".." / tmp_path.name) == token
    other = tmp_path / "other"
    other.mkdir()
    assert load_or_create_token(other) != token


@posix_only
def test_a_token_file_others_can_read_is_narrowed(tmp_path):
    token = load_or_create_token(tmp_path)
    os.chmod(token_path(tmp_path), 0o644)
    assert load_or_create_token(tmp_path) == token and mode(token_path(tmp_path)) == 0o600


@posix_only
def test_a_stale_temporary_file_does_not_leak_its_mode(tmp_path):
    stale = tmp_path / f".api-token.{os.getpid()}.tmp"
    stale.write_text("old")
    os.chmod(stale, 0o666)
    load_or_create_token(tmp_path)
    assert mode(token_path(tmp_path)) == 0o600 and not stale.exists()


@pytest.mark.parametrize("content", ["", "short", "has spaces in it but is long enough", "\xff" * 40])
def test_an_unusable_file_is_replaced_by_a_new_token(tmp_path, content):
    token_path(tmp_path).write_text(content, encoding="latin-1")
    assert read_token(tmp_path) is None
    token = load_or_create_token(tmp_path)
    assert token != content and read_token(tmp_path) == token


def test_no_file_no_token(tmp_path):
    assert read_token(tmp_path) is None
