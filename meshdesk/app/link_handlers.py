"""Windows: the meshdesk:// handler in HKCU, written at each desktop start inside a bundle and
removed at uninstall (`meshdesk --unregister-links`); adapters/windows_links.py writes the keys."""

from __future__ import annotations

import logging
import sys


def bundle_launcher() -> list[str] | None:
    """The app's own launcher inside a bundle (MeshDesk.exe); None from a checkout, whose
    Python a link handler should not outlive."""
    from meshdesk.core.launcher import runs_modules
    from meshdesk.node.child_process import app_command, this_runtime

    return None if runs_modules(this_runtime()) else app_command()


def register_windows_links(registry=None) -> bool:
    """True when the handler names this app now; a registry that refuses is logged, not fatal."""
    from meshdesk.adapters.windows_links import WinregRegistry, register_links

    if (launcher := bundle_launcher()) is None:
        return False
    try:
        register_links(registry or WinregRegistry(), launcher)
    except OSError as error:
        logging.getLogger(__name__).warning("cannot register meshdesk:// links: %s", error)
        return False
    return True


def unregister_windows_links(registry=None) -> int:
    """`meshdesk --unregister-links`, which the MSI's pre-uninstall script runs; always 0, so a
    failure here never blocks an uninstall."""
    from meshdesk.adapters.windows_links import WinregRegistry, unregister_links

    if registry is None and sys.platform != "win32":
        print("Nothing to remove: meshdesk:// links are registered in the registry only on Windows.")
        return 0
    launcher = bundle_launcher() or []
    try:
        removed = unregister_links(registry or WinregRegistry(), launcher)
    except OSError as error:
        print(f"Could not remove the meshdesk:// link handler: {error}")
        return 0
    print("Removed the meshdesk:// link handler." if removed else "No meshdesk:// link handler of this app to remove.")
    return 0
