"""Connects the views' intents to the node, and the node's changes to the views.

No IO here: the node does the work, and what touches files or decoders (start-at-login entries,
QR decoding) is handed in by the app as plain functions. Async intents run as tasks, so a
click never waits on the network; blocking work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import PurePath
from typing import Callable

from PySide6.QtGui import QGuiApplication, QImage

from meshdesk.core.invite import TokenError, decode_token
from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.join_offer import join_offer
from meshdesk.ui.join_view import JoinView, is_invite
from meshdesk.ui.main_window import MainWindow
from meshdesk.ui.throttle import Throttle
from meshdesk.ui.tray import TrayMenu

log = logging.getLogger(__name__)

INVITE_SECONDS = 7 * 24 * 3600


@dataclass
class DesktopServices:
    """What the app layer lends the controller; each blocking function runs in a thread."""

    decode_image: Callable[[QImage], list[str]]          # QR texts in an image
    decode_file: Callable[[str], list[str]]              # QR texts in an image file
    autostart_enabled: Callable[[], bool]
    set_autostart: Callable[[bool], str]                 # returns a note for the user
    quit: Callable[[], None]
    wall_clock: Callable[[], float] = time.time          # unix seconds, for an invite's expiry
    remember_choice: Callable[[str], None] = lambda choice: None  # the first run's "start"/"join"


class DesktopController:
    def __init__(self, node, window: MainWindow, tray_menu: TrayMenu, services: DesktopServices,
                 tray=None):
        self.node = node
        self.window = window
        self.menu = tray_menu
        self.tray = tray
        self.services = services
        self.tasks: set[asyncio.Task] = set()
        self.invite_mesh_id: str | None = None
        self.throttle = Throttle(self.redraw, parent=window)
        node.subscribe(self.throttle.poke)
        self._connect_window()
        self._connect_models()
        self._connect_tray()

    def _connect_window(self) -> None:
        window = self.window
        window.keep_running_in_tray = self.tray is not None
        window.closed.connect(self.services.quit)
        window.mesh.refresh_wanted.connect(self.throttle.poke)  # the Mesh tab's live activity
        if self.tray is not None:
            window.hidden_to_tray.connect(self.tray.say_still_running)
        window.settings.capacity_cap_requested.connect(self.node.set_capacity_cap)
        window.settings.start_at_login_toggled.connect(self.set_start_at_login)
        window.settings.rename_requested.connect(self.rename)
        window.settings.show_start_at_login(self.services.autostart_enabled())
        window.invite.mint_requested.connect(self.mint_invite)
        window.invite.revoke_requested.connect(self.revoke)
        for join in (window.join, window.first_run.join):
            self._connect_join(join)
        window.first_run.start_chosen.connect(self.start_mesh)

    def _connect_join(self, view: JoinView) -> None:
        """The Join tab and the first run's Join view: the same intents, answered in the view asked."""
        view.review_requested.connect(lambda text: self.review(text, view))
        view.join_confirmed.connect(lambda text, leave: self.run(self.join(text, leave, view)))
        view.scan_image_requested.connect(
            lambda image, source: self.run(self.scan(self.services.decode_image, image, source, view)))
        view.scan_file_requested.connect(
            lambda path: self.run(self.scan(self.services.decode_file, path, path, view)))
        view.use_frame_decoder(self.services.decode_image)  # camera frames, in the camera's worker

    def _connect_models(self) -> None:
        """Serve and drop go to the node; downloads are the app's (`app.download_controller`)."""
        models = self.window.models
        models.serve_requested.connect(lambda target: self.run(self.serve(target)))
        models.drop_requested.connect(self.drop)

    def _connect_tray(self) -> None:
        self.menu.open_requested.connect(self.window.bring_forward)
        self.menu.donate_toggled.connect(self.node.set_donating)
        self.menu.copy_invite_requested.connect(self.copy_invite)
        self.menu.quit_requested.connect(self.services.quit)

    def run(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("desktop task failed", exc_info=task.exception())

    def redraw(self) -> None:
        snapshot = self.node.status()
        self.window.show_status(snapshot)
        self.menu.show_status(snapshot)
        if self.tray is not None:
            self.tray.show_status(snapshot)
        self._keep_invite_current(snapshot)

    def _keep_invite_current(self, snapshot: StatusSnapshot) -> None:
        """Mints an invite when the node enters a mesh (or another mesh) so the tab is ready."""
        mesh_id = None if snapshot.mesh is None else snapshot.mesh.id
        if mesh_id and mesh_id != self.invite_mesh_id:
            self.mint_invite(INVITE_SECONDS)

    def mint_invite(self, expires_in: int) -> dict | None:
        try:
            invite = self.node.mint_invite(expires_in)
        except ValueError as error:
            self.window.invite.show_message(str(error))
            return None
        mesh = self.node.status().mesh
        self.invite_mesh_id = None if mesh is None else mesh.id
        self.window.invite.show_invite(invite)
        return invite

    def revoke(self, token: str) -> None:
        try:
            self.node.revoke(token)
        except ValueError as error:
            self.window.invite.show_message(f"Cannot revoke: {error}")
            return
        self.window.invite.show_revoked()

    def copy_invite(self) -> None:
        invite = self.window.invite.invite or self.mint_invite(INVITE_SECONDS)
        if invite:
            QGuiApplication.clipboard().setText(invite["link"])

    def rename(self, name: str) -> None:
        try:
            self.node.rename(name)
        except (OSError, ValueError) as error:
            self.window.settings.show_start_at_login(self.services.autostart_enabled(),
                                                     f"Could not rename this node: {error}")

    def set_start_at_login(self, enabled: bool) -> None:
        try:
            note = self.services.set_autostart(enabled)
        except (OSError, ValueError) as error:
            note = f"Could not change start at login: {error}"
        self.window.settings.show_start_at_login(self.services.autostart_enabled(), note)

    def start_mesh(self) -> None:
        """The first run's "Start a mesh": the runtime founds this machine's mesh as it starts
        (or has), so what is left is to remember the choice and open the chat."""
        self.services.remember_choice("start")
        self.window.show_tab(self.window.chat)

    def open_link(self, text: str) -> None:
        """A link opened from outside (the desktop entry, a second launch): shown, never joined.
        During the first run it is the answer to the question, so the first run's Join shows it."""
        self.window.bring_forward()
        if self.window.showing_first_run():
            self.window.first_run.show_join()
            self.review(text, self.window.first_run.join)
            return
        self.window.show_tab(self.window.join)
        self.review(text)

    def review(self, text: str, view: JoinView | None = None) -> None:
        """Shows what joining `text` means; the join waits for the user's confirmation."""
        view = view or self.window.join
        try:
            token = decode_token(text)
        except TokenError as error:
            view.show_result(str(error))
            return
        view.show_offer(join_offer(
            text, token, self.services.wall_clock(), self.node.status(),
            self.node.mesh_left_by(token), self.node.invite_problem(token)))

    async def join(self, text: str, leave_current: bool = False, view: JoinView | None = None) -> None:
        """The user confirmed; `leave_current` only when they also ticked leaving their mesh.
        Joined from the first run, the choice is remembered and the chat opens."""
        view = view or self.window.join
        view.show_joining()
        try:
            await self.node.join(text, leave_current=leave_current)
        except ValueError as error:
            view.show_join_result(str(error))
            return
        view.show_join_result("Joined the mesh.", joined=True)
        if view is self.window.first_run.join:
            self.services.remember_choice("join")
            self.window.show_tab(self.window.chat)
        self.throttle.poke()

    async def scan(self, decode: Callable, source_object, source: str,
                   view: JoinView | None = None) -> None:
        view = view or self.window.join
        view.show_scanning(source)
        try:
            texts = await asyncio.to_thread(decode, source_object)
        except (OSError, ValueError) as error:
            view.show_result(f"Cannot read {source}: {error}")
            return
        view.show_scan_result([text for text in texts if is_invite(text)], source)

    async def serve(self, target: str) -> None:
        models = self.window.models
        models.show_message(f"Asking the mesh to serve {PurePath(target).stem}…")
        try:
            model_id = await self.node.serve(target)
        except ValueError as error:
            models.show_message(f"Cannot serve {PurePath(target).stem}: {error}")
            return
        models.show_message(f"This node now serves {model_id}; the mesh re-plans around it.")

    def drop(self, model_id: str) -> None:
        try:
            self.node.drop(model_id)
        except ValueError as error:
            self.window.models.show_message(f"Cannot drop {model_id}: {error}")
            return
        self.window.models.show_message(f"Dropped {model_id}; the mesh stops serving it unless "
                                        "another node asks for it.")

    def close(self) -> None:
        """Cancels what is still running (a join, a scan); the app is ending."""
        for task in list(self.tasks):
            task.cancel()
