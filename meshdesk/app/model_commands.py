"""`meshdesk models` and `meshdesk download`: what models there are, and getting them."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from meshdesk.adapters import hf_download
from meshdesk.adapters.gguf_metadata import ModelFileError, read_model_info
from meshdesk.app.command_line import CommandFailed, OneLineErrorParser, gigabytes
from meshdesk.app.home import Home, default_home
from meshdesk.app.mesh_setup import capacity_bytes
from meshdesk.app.model_choice import bundled_catalog, find_by_name, find_catalog_file, model_folders
from meshdesk.app.model_listing import Capacity, mesh_capacity, model_rows, running_node_status
from meshdesk.app.progress_bar import ProgressBar, describe_bytes
from meshdesk.core.catalog import Catalog, CatalogEntry, CatalogError

MODEL_COMMANDS = ("models", "download")
DASH = "—"


def command_parser(command: str) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=f"meshdesk {command}", description=DESCRIPTIONS[command])
    parser.add_argument("--home", type=Path, metavar="DIR",
                        help="the node's data folder (default: $MESHDESK_HOME or the platform's)")
    if command == "models":
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.add_argument("--max-vram", type=gigabytes, metavar="GB",
                            help="judge the fit for this node as if it offered only this many GB")
    else:
        parser.add_argument("name", nargs="?", help="catalog name or alias, e.g. 32b (none: list the catalog)")
        parser.add_argument("--draft", action="store_true", help="also download the paired draft model")
        parser.add_argument("--quant", metavar="Q", help="quantization, e.g. Q8_0 (default: Q4_K_M)")
    return parser


DESCRIPTIONS = {
    "models": "List catalog and local models, whether they are downloaded, and whether they fit "
              "this node or the mesh.",
    "download": "Download a catalog model from Hugging Face into the models folder; an interrupted "
                "download resumes where it stopped.",
}


def run_model_command(command: str, argv: list[str]) -> int:
    arguments = command_parser(command).parse_args(argv)
    home = Home((arguments.home or default_home()).expanduser().resolve())
    try:
        if command == "models":
            show_models(home, arguments)
        else:
            download_command(home, arguments)
    except (CommandFailed, hf_download.DownloadError, CatalogError) as failure:
        sys.stderr.write(f"meshdesk {command}: error: {failure}\n")
        return 2
    return 0


# --- meshdesk models ------------------------------------------------------------------------


def show_models(home: Home, arguments: argparse.Namespace) -> None:
    status = running_node_status(home)
    mesh_bytes, members = mesh_capacity(status) if status is not None else (None, None)
    capacity = Capacity(capacity_bytes(arguments.max_vram), mesh_bytes, members)
    rows = model_rows(bundled_catalog(), model_folders(home.models), capacity)
    if arguments.json:
        print(json.dumps({"node_capacity_bytes": capacity.node_bytes, "mesh_capacity_bytes": mesh_bytes,
                          "mesh_members": members, "models": rows}, indent=2))
        return
    print(f"This node offers {describe_bytes(capacity.node_bytes)}; "
          + (f"the mesh ({members} nodes) {describe_bytes(mesh_bytes)}." if status is not None
             else f"no node is running for {home.root}, so the mesh is not known."))
    print_table(["NAME", "QUANT", "SIZE", "DRAFT", "ON DISK", "THIS NODE", "MESH"],
                [[row["name"], row["quant"] or DASH, describe_bytes(row["size_bytes"]),
                  draft_cell(row["draft"], row.get("moe")), on_disk(row), row["fit_here"] or DASH,
                  row["fit_mesh"] or DASH] for row in rows])


def draft_cell(draft: str | None, moe: bool | None) -> str:
    return draft or ("none (MoE)" if moe else DASH)


def on_disk(row: dict) -> str:
    if row["bundled"]:
        return "built in"
    if row["downloaded"]:
        return "yes" if row["in_catalog"] else "local"
    return f"partial {describe_bytes(row['partial_bytes'])}" if row.get("partial_bytes") else "no"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(line[column])) for line in [header, *rows]) for column in range(len(header))]
    for line in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())


# --- meshdesk download ----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    entry: CatalogEntry
    quant: str
    target: Path


def download_command(home: Home, arguments: argparse.Namespace) -> None:
    catalog = bundled_catalog()
    if arguments.name is None:
        list_catalog(catalog, model_folders(home.models))
        return
    jobs = planned_jobs(catalog, home, arguments)
    remotes = [hf_download.find_remote_file(job.entry.repo, job.entry.quant(job.quant).file) for job in jobs]
    needed = sum(remote.size - hf_download.resumable_bytes(remote, job.target) for job, remote in zip(jobs, remotes))
    hf_download.check_disk_space(home.models, needed)
    for job, remote in zip(jobs, remotes):
        fetch(job, remote)


def planned_jobs(catalog: Catalog, home: Home, arguments: argparse.Namespace) -> list[Job]:
    entry = catalog.resolve(arguments.name)
    if entry is None:
        raise CommandFailed(f"unknown model '{arguments.name}': run `meshdesk download` to list the catalog")
    wanted = [(entry, entry.quant(arguments.quant).name)]
    if arguments.draft:
        draft = catalog.draft_for(entry)
        if draft is None:
            print(f"{entry.name} has no paired draft model.")
        else:
            wanted.append((draft, draft.default_quant.name))
    jobs = []
    for model, quant in wanted:
        existing = find_by_name(model.local_file(quant), model_folders(home.models))
        if model.bundled:
            print(f"{model.name} is built in: nothing to download.")
        elif existing is not None:
            print(f"{model.name} {quant} is already downloaded: {existing}")
        else:
            jobs.append(Job(model, quant, home.models / model.local_file(quant)))
    return jobs


def fetch(job: Job, remote: hf_download.RemoteFile) -> None:
    resumed = hf_download.resumable_bytes(remote, job.target)
    print(f"Downloading {job.entry.name} {job.quant} ({describe_bytes(remote.size)}) from {job.entry.repo}"
          + (f", resuming at {describe_bytes(resumed)}" if resumed else ""), flush=True)
    bar = ProgressBar(sys.stderr, job.target.name)
    try:
        hf_download.download(remote, job.target, progress=bar, check=gguf_problem)
    finally:
        bar.finish()
    print(f"Saved {job.target}", flush=True)


def gguf_problem(path: Path) -> str | None:
    try:
        read_model_info(path)
    except ModelFileError as error:
        return str(error)
    return None


def list_catalog(catalog: Catalog, folders: list[Path]) -> None:
    rows = []
    for entry in catalog.entries:
        state = "built in" if entry.bundled else ("yes" if find_catalog_file(entry, folders) else "")
        rows.append([entry.name, ", ".join(entry.aliases) or DASH, describe_bytes(entry.size_bytes),
                     " ".join(q.name for q in entry.quants), draft_cell(entry.draft, entry.moe), state])
    print_table(["NAME", "ALIASES", "SIZE", "QUANTS", "DRAFT", "ON DISK"], rows)
    print("\nDownload one with `meshdesk download NAME [--draft] [--quant Q]`, e.g. `meshdesk download 32b --draft`.")
