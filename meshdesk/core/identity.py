"""Names derived from keys and secrets: a node's id from its public key, a mesh's id from its secret."""

from __future__ import annotations

import hashlib

NODE_ID_LENGTH = 20
MESH_ID_LENGTH = 16
PUBLIC_KEY_LENGTH = 32  # raw Ed25519
# Keeps the mesh id unrelated to any other hash of the same secret (e.g. the membership proof key).
_MESH_ID_DOMAIN = b"meshdesk mesh id\0"


def node_id_for(public_key: bytes) -> str:
    """The id that names a node everywhere: a prefix of the SHA-256 of its raw Ed25519 public key."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LENGTH:
        raise ValueError(f"a node's public key is {PUBLIC_KEY_LENGTH} raw Ed25519 bytes, "
                         f"not {_describe(public_key)}")
    return hashlib.sha256(public_key).hexdigest()[:NODE_ID_LENGTH]


def mesh_id_for(mesh_secret: bytes) -> str:
    """The public name of a mesh, safe to show: it reveals nothing of the secret."""
    if not isinstance(mesh_secret, bytes) or not mesh_secret:
        raise ValueError(f"a mesh secret is non-empty bytes, not {_describe(mesh_secret)}")
    return hashlib.sha256(_MESH_ID_DOMAIN + mesh_secret).hexdigest()[:MESH_ID_LENGTH]


def _describe(value: object) -> str:
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return type(value).__name__
