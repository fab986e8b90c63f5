"""The names of states that cross layers (and the wire): each spelled here once.

They are `StrEnum`s, so a member equals its wire string (`ModelState.READY == "ready"`), formats
as it (`f"{role}"` reads "host") and serialises to it with `json`. Code compares against and
assigns the members; only parsers meet the bare strings, through the constructors
(`ModelState("ready")`, which raises ValueError for a name not listed).
"""

from __future__ import annotations

from enum import StrEnum


class ModelState(StrEnum):
    """What a node says of each model it serves or routes (`/api/status` "models")."""

    LOADING = "loading"  # a model host here is starting, or this node asked and waits for a plan
    READY = "ready"      # a model host here answers
    FAILED = "failed"    # a model host here gave up (llama.cpp refused the file); it stays failed
    REMOTE = "remote"    # another node hosts it; requests are routed there
    WAITING = "waiting"  # planned, but the mesh has too little capacity for it yet


class PlanState(StrEnum):
    """How the mesh serves one model (`/api/status` "plans")."""

    SOLO = "solo"        # one node holds the whole model
    SPLIT = "split"      # its layers are spread over several nodes
    WAITING = "waiting"  # nobody can host it: not enough capacity


class Role(StrEnum):
    """What a node does for the mesh, as it gossips it."""

    HOST = "host"        # runs a model host (solo, or the last device of a split)
    WORKER = "worker"    # lends its rpc worker to another node's split
    CLIENT = "client"    # a lite client: no model, no capacity, only the API
    STANDBY = "standby"  # offers capacity, serves nothing at the moment


class Liveness(StrEnum):
    """How a node sees a peer, from heartbeats and notices."""

    ALIVE = "alive"
    SUSPECT = "suspect"  # heartbeats are late; still counted as a member
    DEAD = "dead"        # silent too long
    LEFT = "left"        # said goodbye
    REMOVED = "removed"  # removed from the mesh by a member


ROLES = tuple(role.value for role in Role)
LIVENESS_STATES = tuple(liveness.value for liveness in Liveness)
