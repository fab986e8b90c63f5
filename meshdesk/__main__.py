import sys

from meshdesk.core.launcher import child_request

try:
    _child = child_request(sys.argv[1:])  # `LAUNCHER --child MODULE ...`: a bundle's children
except ValueError as error:
    raise SystemExit(f"meshdesk: {error}")
if _child is not None:
    import runpy

    sys.argv = [_child[0], *_child[1]]
    runpy.run_module(_child[0], run_name="__main__", alter_sys=True)
    raise SystemExit(0)

from meshdesk.app.cli import main  # noqa: E402  (after the child dispatch: a child loads none of the app)

raise SystemExit(main())
