"""Serve and Drop from the Models tab reach a real node (assembled as the app does, in a mesh of
its own, without a running model host): the model is hashed, wanted, planned, then dropped."""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.app.assembly import build_runtime
from meshdesk.app.cli import build_parser
from meshdesk.app.home import Home
from tests.hub_stand_in import write_tiny_gguf
from tests.test_ui_controller import desktop
from tests.test_ui_models import catalog_row

TINY = "tiny-model"


@pytest.fixture
def node_and_loop(tmp_path):
    loop = asyncio.new_event_loop()
    arguments = build_parser().parse_args(["--home", str(tmp_path), "--port", "0",
                                           "--bind-host", "127.0.0.1", "--name", "alice"])
    home = Home(tmp_path)
    home.prepare()
    write_tiny_gguf(home.models / f"{TINY}.gguf")
    runtime = build_runtime(arguments, home, [], [])
    loop.run_until_complete(runtime.mesh.bind())
    runtime.mesh.load_or_create_mesh()
    yield runtime.node, loop
    loop.run_until_complete(runtime.mesh.leave())
    loop.close()


def planned(node) -> list[str]:
    return [plan.model for plan in node.status().plans]


def test_serve_then_drop_from_the_models_tab(qtbot, node_and_loop):
    node, loop = node_and_loop
    controller, window, _, _ = desktop(qtbot, node)
    models = window.models
    path = str(node.identity.home / "models" / f"{TINY}.gguf")
    models.show_catalog([catalog_row(TINY, 3_000_000, 1_000_000, path=path) | {"in_catalog": False}])
    models.table.selectRow(0)
    assert models.buttons["Serve"].isEnabled() and not models.buttons["Drop"].isEnabled()

    async def click_serve():  # the click schedules the intent on the running loop, as under qasync
        models.buttons["Serve"].click()
        await asyncio.gather(*controller.tasks)
    loop.run_until_complete(click_serve())
    assert node.status().wants == (TINY,) and planned(node) == [TINY]
    assert models.message.text().startswith(f"This node now serves {TINY}")
    controller.redraw()
    [status] = node.status().models
    assert status.id == TINY and models.rows[0].serving == status.state and models.rows[0].can_drop
    assert models.buttons["Drop"].isEnabled() and not models.buttons["Serve"].isEnabled()

    models.buttons["Drop"].click()
    assert node.status().wants == () and planned(node) == []
    assert models.message.text().startswith(f"Dropped {TINY}")


def test_serving_something_that_is_not_a_model_says_why(qtbot, node_and_loop):
    node, loop = node_and_loop
    controller, window, _, _ = desktop(qtbot, node)
    loop.run_until_complete(controller.serve("no-such-model"))
    assert window.models.message.text().startswith("Cannot serve no-such-model: unknown model 'no-such-model'")
    assert node.status().wants == ()
