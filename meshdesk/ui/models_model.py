"""Rows for the Models view's served and peer tables and the Chat model picker, from a status
snapshot (pure); the catalog table is `model_table`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from meshdesk.ui.mesh_model import peers_of, plans_of
from meshdesk.ui.text import DASH, gigabytes, text_or_dash


@dataclass(frozen=True)
class ModelRow:
    name: str
    where: str
    size: str
    state: str
    detail: str


def local_model_rows(snapshot: dict) -> list[ModelRow]:
    rows = []
    for model in snapshot.get("models") or []:
        if isinstance(model, dict):
            where = "the mesh" if model.get("state") in ("remote", "waiting") else "this node"
            rows.append(ModelRow(text_or_dash(model.get("id")), where,
                                 gigabytes(model.get("size_bytes")), text_or_dash(model.get("state")),
                                 model.get("error") or text_or_dash(model.get("path"))))
    return rows


def peer_model_rows(snapshot: dict) -> list[ModelRow]:
    """Models on peers' disks; gossip carries {"name", "size", "digest"} or plain names."""
    rows = []
    for peer in peers_of(snapshot):
        for model in peer.get("models") or []:
            name, size = (model.get("name"), model.get("size")) if isinstance(model, dict) else (model, None)
            rows.append(ModelRow(PurePath(str(name)).stem if name else DASH, text_or_dash(peer.get("name")),
                                 gigabytes(size), "on disk", DASH))
    return rows


def chat_model_choices(snapshot: dict) -> list[str]:
    """Models a chat can use (the node's `/v1/models`: its own and those it routes to), then the
    mesh's plans; ready and remote ones first."""
    local = [m for m in snapshot.get("models") or [] if isinstance(m, dict) and m.get("id")]
    local.sort(key=lambda model: model.get("state") not in ("ready", "remote"))
    names = [str(model["id"]) for model in local]
    names += [str(plan["model"]) for plan in plans_of(snapshot) if plan.get("model")]
    return list(dict.fromkeys(names))
