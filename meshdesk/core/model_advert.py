"""What a node tells the mesh about one model file on its disk, and whether it asks the mesh
to serve it.

Wire format (a JSON object inside a node record's `models`)::

    {"name": "gemma-3-270m.gguf", "size": 253000000, "digest": "<sha256 hex>", "layers": 18,
     "wanted": true, "split": false, "tensor_split": [1.0, 2.0] or null}

`name`, `size` and `digest` are required. Older nodes send `layers` but leave out the last
three fields for models they do not want served, so a missing field means null / false.
Unknown fields are ignored, so that a later version can add one without older nodes dropping
its gossip. The file's path never leaves its node.

`context_length` (the context the model was trained for) and `kv_bytes_per_token` (its f16 KV
cache for one token, every layer: what the planner counts besides the weights) are written
only when the file says, so an advert without them, from an earlier protocol-4 build or a
stored want, reads back and re-signs the same; the planner then counts the margin alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from meshdesk.core.gossip_values import (
    MAX_COUNTER,
    check,
    read_counter,
    read_flag,
    read_list,
    read_mapping,
    read_number,
    read_text,
)
from meshdesk.core.planning import MAX_CONTEXT, ModelNeeds, planned_context

MAX_NAME_LENGTH = 256
MAX_DIGEST_LENGTH = 128
MAX_LAYERS = 1_000_000
MAX_SPLIT_RATIOS = 1024  # one per device, and a split has no more devices than the mesh has nodes
MAX_ADVERT_FIELDS = 32
MAX_KV_BYTES_PER_TOKEN = 1 << 26  # 64 MiB a token; real models need well under 5 MiB
OPTIONAL_FIELDS = ("context_length", "kv_bytes_per_token")  # left out of the wire when None
REQUIRED_FIELDS = ("name", "size", "digest")


@dataclass(frozen=True)
class ModelAdvert:
    """One model file a node holds. `wanted`, `split` and `tensor_split` are the node's request
    to the mesh: serve this model, split it even if it fits one node (`--split`), with these
    ratios (`--tensor-split`). Validated on construction."""

    name: str                 # the file name, e.g. "gemma-3-270m-q4_k_m.gguf"
    size: int                 # bytes
    digest: str               # SHA-256 of the file, hex: equal digests are the same file
    layers: int | None = None  # transformer blocks, when the file says
    wanted: bool = False
    split: bool = False
    tensor_split: tuple[float, ...] | None = None
    context_length: int | None = None      # the context it was trained for, when the file says
    kv_bytes_per_token: int | None = None  # f16 K and V of every layer for one token

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensor_split", _ratios(self.tensor_split))
        read_text(self.name, "model name", MAX_NAME_LENGTH, empty_ok=False)
        read_counter(self.size, "model size", MAX_COUNTER)
        read_text(self.digest, "model digest", MAX_DIGEST_LENGTH, empty_ok=False)
        if self.layers is not None:
            read_counter(self.layers, "model layers", MAX_LAYERS)
        read_flag(self.wanted, "model wanted")
        read_flag(self.split, "model split")
        if self.context_length is not None:
            read_counter(self.context_length, "model context_length", MAX_CONTEXT)
        if self.kv_bytes_per_token is not None:
            read_counter(self.kv_bytes_per_token, "model kv_bytes_per_token", MAX_KV_BYTES_PER_TOKEN)

    @property
    def model_id(self) -> str:
        """The name clients ask for: the file name without its extension."""
        return file_stem(self.name)

    @property
    def force_split(self) -> bool:
        """Ratios given by hand ask for a split as much as `split` does."""
        return self.split or self.tensor_split is not None

    def needs(self) -> ModelNeeds:
        """What the planner needs for it: weights, layers, and the KV cache at the mesh's context."""
        return ModelNeeds(self.model_id, self.size, self.layers or 1, self.kv_bytes_per_token or 0,
                          planned_context(self.context_length))

    def to_wire(self) -> dict:
        optional = {name: getattr(self, name) for name in OPTIONAL_FIELDS if getattr(self, name) is not None}
        return {
            "name": self.name,
            "size": self.size,
            "digest": self.digest,
            "layers": self.layers,
            "wanted": self.wanted,
            "split": self.split,
            "tensor_split": None if self.tensor_split is None else list(self.tensor_split),
            **optional,
        }

    @classmethod
    def from_wire(cls, data: object) -> ModelAdvert:
        data = read_mapping(data, "a model advert", MAX_ADVERT_FIELDS)
        missing = [name for name in REQUIRED_FIELDS if name not in data]
        check(not missing, f"model advert lacks {missing[0] if missing else ''}")
        return cls(**{name: data[name] for name in ADVERT_FIELDS if name in data})


ADVERT_FIELDS = tuple(field.name for field in fields(ModelAdvert))


@dataclass(frozen=True)
class SplitOptions:
    """How a node asks for the models it wants served to be split (`--split`, `--tensor-split`);
    they travel in its adverts as `split` and `tensor_split`."""

    force_split: bool = False
    manual_split: tuple[float, ...] | None = None


def _ratios(value: object) -> tuple[float, ...] | None:
    """Manual split ratios: null, or finite non-negative numbers. An empty list means none."""
    if value is None:
        return None
    items = read_list(value, "tensor_split", MAX_SPLIT_RATIOS)
    ratios = tuple(read_number(ratio, "tensor_split ratio") for ratio in items)
    return ratios or None


def file_stem(name: str) -> str:
    """`pathlib.PurePosixPath(name).stem`, without pathlib (core handles no paths)."""
    base = name.rstrip("/").rpartition("/")[2]
    dot = base.rfind(".")
    return base[:dot] if 0 < dot < len(base) - 1 else base
