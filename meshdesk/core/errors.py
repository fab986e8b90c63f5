"""Who is at fault: the peer that broke the protocol, or us.

Everything a peer can make go wrong raises a `PeerProtocolError` with a typed `reason`, so
the node drops that peer (and says why) without matching error text. Our own bugs stay
ordinary exceptions (`ValueError`, `TypeError`, ...) and are never reported as "the peer
sent ...". Errors in what the *user* typed (a pasted token, an option) have their own types
(`core.invite.TokenError`, ...), since they are answered with a message, not a dropped link.

`PeerProtocolError` stays a `ValueError` so that code written against the older, plain
`ValueError` subclasses keeps working; catch `PeerProtocolError` in new code.
"""

from __future__ import annotations

from enum import Enum


class Fault(str, Enum):
    """Why a peer was dropped or refused."""

    MALFORMED = "malformed"          # bytes or JSON that do not parse, or break a bound
    UNAUTHENTICATED = "unauthenticated"  # a proof (signature, MAC, key binding) failed
    REFUSED = "refused"              # the peer told us no (another mesh, a bad invite, ...)
    REMOVED = "removed"              # this node, or the peer, was removed from the mesh
    INCOMPATIBLE = "incompatible"    # a protocol version we do not speak
    UNEXPECTED = "unexpected"        # a well-formed message that has no place here


class PeerProtocolError(ValueError):
    """The peer broke the protocol; str() is one line, `fault` says how."""

    fault: Fault = Fault.MALFORMED

    def __init__(self, message: str, fault: Fault | None = None):
        super().__init__(message)
        if fault is not None:
            self.fault = fault
