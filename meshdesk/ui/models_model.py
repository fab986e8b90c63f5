"""Rows for the Models view's served and peer tables and the Chat model picker, from a status
snapshot; the catalog table is `model_table`. A Qt-free view model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from meshdesk.core.states import ModelState
from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.text import DASH, gigabytes, text_or_dash

ELSEWHERE = (ModelState.REMOTE, ModelState.WAITING)  # states of a model no host here runs
ANSWERING = (ModelState.READY, ModelState.REMOTE)


@dataclass(frozen=True)
class ModelRow:
    name: str
    where: str
    size: str
    state: str
    detail: str


def local_model_rows(snapshot: StatusSnapshot) -> list[ModelRow]:
    # The snapshot has no size for the models this node serves; the column shows a dash.
    return [ModelRow(text_or_dash(model.id), "the mesh" if model.state in ELSEWHERE else "this node",
                     DASH, model.state.value, model.error or text_or_dash(model.path))
            for model in snapshot.models]


def peer_model_rows(snapshot: StatusSnapshot) -> list[ModelRow]:
    """The model files on peers' disks."""
    return [ModelRow(PurePath(file.name).stem or DASH, text_or_dash(peer.name), gigabytes(file.size_bytes),
                     "on disk", DASH)
            for peer in snapshot.peers for file in peer.model_files()]


def chat_model_choices(snapshot: StatusSnapshot) -> list[str]:
    """Models a chat can use (the node's `/v1/models`: its own and those it routes to), then the
    mesh's plans; ready and remote ones first."""
    local = sorted((model for model in snapshot.models if model.id),
                   key=lambda model: model.state not in ANSWERING)
    names = [model.id for model in local] + [plan.model for plan in snapshot.plans if plan.model]
    return list(dict.fromkeys(names))
