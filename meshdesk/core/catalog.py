"""The model catalog: which models MeshDesk knows by name, where to get them, whether they fit.

Pure: the catalog arrives as JSON text (the app reads `catalog.json` from the package), and
every answer is a function of the catalog and the numbers passed in.

Each model is saved locally as `{name}-{quant}.gguf` (e.g. `Qwen2.5-32B-Instruct-Q4_K_M.gguf`),
whatever its Hugging Face file is called, so the same model has the same id on every node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from meshdesk.core.planning import FIT_MARGIN

DEFAULT_QUANT = "Q4_K_M"
FITS_HERE, FITS_MESH, TOO_LARGE = "fits here", "fits the mesh", "too large"
KV_BYTES_PER_VALUE = 2  # llama.cpp keeps the KV cache in f16 by default


class CatalogError(ValueError):
    """The catalog data is malformed; the message names the entry and field."""


@dataclass(frozen=True)
class Quantization:
    name: str        # e.g. "Q4_K_M"
    file: str        # the file's path in the Hugging Face repo
    size_bytes: int


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    aliases: tuple[str, ...]
    repo: str | None           # None only for the bundled model
    quants: tuple[Quantization, ...]
    layers: int
    context_length: int
    kv_dim: int                # key (= value) width per layer and token: KV heads x head size
    draft: str | None          # name of the paired draft model
    moe: bool = False
    bundled: bool = False
    description: str = ""

    @property
    def default_quant(self) -> Quantization:
        return self.quant(DEFAULT_QUANT if any(q.name == DEFAULT_QUANT for q in self.quants)
                          else self.quants[0].name)

    @property
    def size_bytes(self) -> int:
        return self.default_quant.size_bytes

    def quant(self, name: str | None = None) -> Quantization:
        if name is None:
            return self.default_quant
        for quant in self.quants:
            if quant.name.lower() == name.lower():
                return quant
        offered = ", ".join(quant.name for quant in self.quants)
        raise CatalogError(f"{self.name} has no quantization {name} (offered: {offered})")

    def local_file(self, quant: str | None = None) -> str:
        """The file name in the models folder; the bundled model keeps its package's name."""
        chosen = self.quant(quant)
        return chosen.file if self.bundled else f"{self.name}-{chosen.name}.gguf"

    def local_files(self) -> list[str]:
        """Every quantization's local name, the default first."""
        default = self.local_file()
        return [default] + [self.local_file(q.name) for q in self.quants if self.local_file(q.name) != default]

    def names(self) -> list[str]:
        """Every spelling that resolves to this entry."""
        stems = [file.removesuffix(".gguf") for file in self.local_files()]
        stems += [q.file.rsplit("/", 1)[-1].removesuffix(".gguf") for q in self.quants]
        return [self.name, *self.aliases, *stems]


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]

    def resolve(self, name: str) -> CatalogEntry | None:
        """The entry called `name`: a name, alias or file stem, in any letter case."""
        wanted = name.strip().lower().removesuffix(".gguf")
        for entry in self.entries:
            if wanted in (spelling.lower() for spelling in entry.names()):
                return entry
        return None

    def draft_for(self, entry: CatalogEntry) -> CatalogEntry | None:
        return self.resolve(entry.draft) if entry.draft else None

    def by_local_file(self, file_name: str) -> tuple[CatalogEntry, str] | None:
        """The entry and quantization a file in the models folder holds, if it is one of ours."""
        for entry in self.entries:
            for quant in entry.quants:
                if entry.local_file(quant.name).lower() == file_name.lower():
                    return entry, quant.name
        return None


def kv_cache_bytes(layers: int, kv_dim: int, context: int) -> int:
    """K and V for every layer and token: 2 x layers x context x kv_dim x 2 bytes (f16).

    Conservative: it ignores sliding-window layers (Gemma 3) and MLA compression (GLM),
    which only make the real cache smaller.
    """
    return 2 * layers * context * kv_dim * KV_BYTES_PER_VALUE


def entry_kv_cache_bytes(entry: CatalogEntry, context: int) -> int:
    return kv_cache_bytes(entry.layers, entry.kv_dim, min(context, entry.context_length))


def needed_bytes(model_bytes: int, kv_bytes: int) -> int:
    """Weights with the planner's margin plus the KV cache, as `core.planning.needed_bytes`
    counts them, so that "fits here" agrees with the planner serving the model solo."""
    return int(model_bytes * FIT_MARGIN) + kv_bytes


def fit_label(model_bytes: int, kv_bytes: int, node_capacity: int, mesh_capacity: int | None = None) -> str:
    """"fits here" on this node alone, else "fits the mesh" when the mesh's total holds it."""
    needed = needed_bytes(model_bytes, kv_bytes)
    if needed <= node_capacity:
        return FITS_HERE
    if mesh_capacity is not None and needed <= mesh_capacity:
        return FITS_MESH
    return TOO_LARGE


# --- reading the data file ------------------------------------------------------------------


def parse_catalog(text: str) -> Catalog:
    """The catalog in `text` (JSON), validated; raises CatalogError with one clear line."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise CatalogError(f"the catalog is not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise CatalogError('the catalog must be an object with a "models" list')
    catalog = Catalog(tuple(_entry(item, index) for index, item in enumerate(data["models"])))
    _check_names_unique(catalog)
    _check_drafts(catalog)
    return catalog


def _entry(item: object, index: int) -> CatalogEntry:
    if not isinstance(item, dict):
        raise CatalogError(f"catalog entry {index} is not an object")
    where = f"catalog entry {item.get('name', index)!r}"
    bundled = _field(item, "bundled", bool, where, False)
    repo = _field(item, "repo", str, where, None)
    if repo is None and not bundled:
        raise CatalogError(f"{where} needs a Hugging Face repo (only the bundled model has none)")
    return CatalogEntry(
        name=_field(item, "name", str, where),
        aliases=tuple(_strings(item.get("aliases", []), f"{where} aliases")),
        repo=repo,
        quants=_quants(item.get("quants"), where),
        layers=_positive(item, "layers", where),
        context_length=_positive(item, "context_length", where),
        kv_dim=_positive(item, "kv_dim", where),
        draft=_field(item, "draft", str, where, None),
        moe=_field(item, "moe", bool, where, False),
        bundled=bundled,
        description=_field(item, "description", str, where, ""),
    )


_REQUIRED = object()


def _field(item: dict, key: str, kind: type, where: str, default=_REQUIRED):
    value = item.get(key)
    if value is None:
        if default is _REQUIRED:
            raise CatalogError(f"{where} has no {key}")
        return default
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise CatalogError(f"{where}: {key} should be a {'non-empty string' if kind is str else kind.__name__}")
    return value


def _positive(item: dict, key: str, where: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CatalogError(f"{where}: {key} should be a positive integer")
    return value


def _strings(values: object, where: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise CatalogError(f"{where} should be a list of non-empty strings")
    return values


def _quants(values: object, where: str) -> tuple[Quantization, ...]:
    if not isinstance(values, dict) or not values:
        raise CatalogError(f"{where} needs quants: an object from quantization to file and size")
    quants = []
    for name, quant in values.items():
        if not isinstance(quant, dict):
            raise CatalogError(f"{where} quant {name} is not an object")
        file = _field(quant, "file", str, f"{where} quant {name}")
        if not file.endswith(".gguf"):
            raise CatalogError(f"{where} quant {name}: file should be a .gguf file, not {file!r}")
        quants.append(Quantization(name, file, _positive(quant, "size_bytes", f"{where} quant {name}")))
    return tuple(quants)


def _check_names_unique(catalog: Catalog) -> None:
    owners: dict[str, str] = {}
    for entry in catalog.entries:
        for spelling in {spelling.lower() for spelling in entry.names()}:
            if owners.setdefault(spelling, entry.name) != entry.name:
                raise CatalogError(f"catalog name {spelling!r} means both {owners[spelling]} and {entry.name}")


def _check_drafts(catalog: Catalog) -> None:
    for entry in catalog.entries:
        if entry.draft is None:
            continue
        draft = catalog.resolve(entry.draft)
        if draft is None:
            raise CatalogError(f"catalog entry {entry.name!r}: draft {entry.draft!r} is not in the catalog")
        if draft is entry or draft.draft is not None:
            raise CatalogError(f"catalog entry {entry.name!r}: draft {draft.name} must be a plain model "
                               "without a draft of its own")
