"""Which models the mesh wants served: mesh state, not any one node's (pure, sans-IO).

One entry per model digest: the model's advert (name, size, digest, layers and the split
options it is to be served with), `wanted` (serve it) or not (dropped), and a stamp
(counter, author node id). Entries merge last-writer-wins by stamp, so every node that has
seen the same entries holds the same ledger, whatever order they came in. The counter is a
hybrid Lamport clock: a new entry's counter is above every counter this node has seen and at
least its wall clock in milliseconds, so a want or drop made later in real time wins even
between nodes that never talked; ties are broken by the author's id.

Wire format (a JSON object, in a gossip message's `wants`)::

    {"advert": {model advert}, "wanted": true, "counter": 1764620000000, "author": node id}

Entries are not signed: any member may serve or drop any model (as in mesh-llm), entries are
taken only from authenticated gossip links (mesh secret, mutual TLS), and a removed node can
no longer link, so a signature would prove only who wrote an entry, which grants nothing.
The bounds (entries held, new digests per author) keep a faulty member from growing the
ledger without end; a full ledger makes room for a newer entry by forgetting its oldest drop,
so junk that was dropped cannot block new models for good; counters far ahead of our clock are
refused so none can be frozen at the top. Anything malformed raises `MembershipError` (one line) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from meshdesk.core.gossip_values import MAX_COUNTER, check, read_counter, read_flag, read_node_id, require_fields
from meshdesk.core.model_advert import ModelAdvert

MAX_WANTS = 128          # entries held, and per message
MAX_WANTS_PER_AUTHOR = 64  # digests one author may bring into the ledger
ENTRY_FIELDS = frozenset({"advert", "wanted", "counter", "author"})


@dataclass(frozen=True)
class WantEntry:
    """The mesh's word on one model: serve it (`wanted`) or not, as of `stamp`."""

    advert: ModelAdvert  # its `wanted` flag means nothing here; `split`/`tensor_split` do
    wanted: bool
    counter: int
    author: str

    def __post_init__(self) -> None:
        check(isinstance(self.advert, ModelAdvert), "a want entry needs a model advert")
        object.__setattr__(self, "advert", replace(self.advert, wanted=False))
        read_flag(self.wanted, "want wanted")
        read_counter(self.counter, "want counter")
        read_node_id(self.author, "want author")

    @property
    def digest(self) -> str:
        return self.advert.digest

    @property
    def stamp(self) -> tuple[int, str]:
        return (self.counter, self.author)

    def to_wire(self) -> dict:
        return {"advert": self.advert.to_wire(), "wanted": self.wanted, "counter": self.counter,
                "author": self.author}

    @classmethod
    def from_wire(cls, data: object) -> WantEntry:
        check(isinstance(data, dict), "a want entry must be an object")
        require_fields(data, ENTRY_FIELDS, "want entry")
        return cls(ModelAdvert.from_wire(data["advert"]), data["wanted"], data["counter"], data["author"])


class WantsLedger:
    """The entries this node holds, one per digest, last writer wins."""

    def __init__(self) -> None:
        self._entries: dict[str, WantEntry] = {}
        self._authors: dict[str, int] = {}  # author -> digests it brought in
        self.highest = 0     # the highest counter seen
        self.ignored = 0     # entries left out: the ledger or their author full
        self.refused = 0     # entries left out: a counter too far ahead of our clock

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WantsLedger) and vars(self) == vars(other)

    __hash__ = None  # mutable

    def __contains__(self, digest: object) -> bool:
        return digest in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> WantEntry | None:
        return self._entries.get(digest)

    def entries(self) -> list[WantEntry]:
        """Every entry, oldest stamp first (the order models are planned in)."""
        return sorted(self._entries.values(), key=lambda entry: entry.stamp)

    def wanted(self) -> list[WantEntry]:
        return [entry for entry in self.entries() if entry.wanted]

    def next_counter(self, clock_ms: int) -> int:
        return min(max(self.highest + 1, clock_ms), MAX_COUNTER)

    def merge(self, entry: WantEntry, limit: int = MAX_COUNTER) -> bool:
        """Keeps `entry` if its stamp is newer than what is held; returns whether it changed
        anything. `limit`: the highest counter taken (our clock plus a margin)."""
        if entry.counter > limit:
            self.refused += 1
            return False
        held = self._entries.get(entry.digest)
        if held is not None and entry.stamp <= held.stamp:
            return False
        if held is None and self._authors.get(entry.author, 0) >= MAX_WANTS_PER_AUTHOR:
            self.ignored += 1
            return False
        if held is None and len(self._entries) >= MAX_WANTS and not self._evict_a_drop(entry):
            self.ignored += 1
            return False
        if held is None:
            self._authors[entry.author] = self._authors.get(entry.author, 0) + 1
        self._entries[entry.digest] = entry
        self.highest = max(self.highest, entry.counter)
        return True

    def _evict_a_drop(self, newcomer: WantEntry) -> bool:
        """Makes room in a full ledger for a newer entry: the oldest drop goes (a drop only
        matters against a want older than itself, and that one is long overtaken). Wanted
        entries are never evicted."""
        oldest = min((entry for entry in self._entries.values() if not entry.wanted),
                     key=lambda entry: entry.stamp, default=None)
        if oldest is None or oldest.stamp >= newcomer.stamp:
            return False
        del self._entries[oldest.digest]
        self._authors[oldest.author] -= 1
        return True

    def merge_all(self, entries: Iterable[WantEntry], limit: int = MAX_COUNTER) -> bool:
        changed = False
        for entry in entries:
            changed = self.merge(entry, limit) or changed
        return changed
