"""Publish an index folder as a dataset repo on the Hugging Face Hub, with a dataset card made from its manifest.

The folder is verified first (sizes and checksums: a damaged index is never published). The manifest,
the files it lists and a generated README.md go up in ONE commit, so nobody downloads half of a new
version. An interrupted push, run again, resends only what the Hub does not hold yet: huggingface_hub
skips files whose content is already stored (and, with Xet storage, chunks already uploaded), and a
push of an unchanged index makes no commit at all. Files of the repo that are not part of the index
(images someone added, say) are left alone. huggingface_hub is imported only when pushing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

import numpy as np

from mlsr._files import read_jsonl
from mlsr.checks import REPO_NAME_PART, check_repo_id
from mlsr.errors import InputError
from mlsr.index.folder import read_manifest
from mlsr.index.manifest import ITEMS_FILE, MANIFEST_FILE
from mlsr.index.manifest import THUMBNAIL_FILES
from mlsr.index.hub import HUB_PREFIX
from mlsr.index.thumbnails import THUMBNAIL_SIDE
from mlsr.settings import DEFAULT_BACKBONE, DEFAULT_HEAD, DEFAULT_TOKENIZER

CARD = Template(Path(__file__).with_name("card.md").read_text(encoding="utf-8"))
CARD_FILE = "README.md"
# what a Hub model id looks like (a local path usually does not)
_MODEL_ID = re.compile(rf"{REPO_NAME_PART}(/{REPO_NAME_PART})?")
_DEFAULTS = {"backbone": DEFAULT_BACKBONE, "head": DEFAULT_HEAD, "tokenizer": DEFAULT_TOKENIZER}
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
         (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]


@dataclass(frozen=True)
class PushReport:
    """What a push did: where the index is now, the commit, and what users of it should know."""

    repo_id: str
    url: str
    commit: str | None
    files: int
    bytes: int
    local_images: int  # items whose image is a file on the publishing machine and that have no thumbnail
    local_models: list[str]  # roles whose recorded model id is a local folder, not a Hub id


def dataset_card(manifest: dict, repo_id: str, local_images: int = 0) -> str:
    """The repo's README.md: items, document kind, models, sizes and how to use it, all from `manifest` (as
    `read_manifest` checked it: `count`, `vocab_size` and `files` are there; older formats lack other fields)."""
    count, files = manifest["count"], manifest["files"]
    local = local_models(manifest)
    lines, args = [], []
    for role, ref in _recorded_models(manifest).items():
        model_id = ref.get("id")
        revision = f" (revision `{ref['revision']}`)" if ref.get("revision") else ""
        note = (" — a local folder where the index was built: publish it too, or nobody else can search this index"
                if role in local else "")
        lines.append(f"  - {role}: `{model_id}`{revision}{note}" if model_id else f"  - {role}: not recorded")
        if model_id and model_id != _DEFAULTS[role]:
            args.append(f" --{role} {model_id}")
    build = manifest.get("build")  # the builder's record (info): not part of the checked schema
    source = build.get("source") if isinstance(build, dict) else None
    source_line = ""
    if isinstance(source, dict) and source.get("dataset"):
        revision = f" (revision `{source['revision']}`)" if source.get("revision") else ""
        source_line = f"- **Built from**: `{source['dataset']}`{revision}, split `{source.get('split')}`."
    pictures = manifest.get("thumbnails")
    if isinstance(pictures, int):
        images = (f"each item's picture travels with the index: a {THUMBNAIL_SIDE}-px WebP thumbnail of {pictures:,}"
                  f" of the {count:,} items (`thumbnails.*.npy`), which the app serves itself")
    else:
        images = ("their images are files of the machine that built it, not published here: the app shows a"
                  f" placeholder for {local_images:,} of them (`python -m mlsr thumbnails --index DIR` adds the"
                  " pictures before a push)" if local_images else "images by URL or none")
    return CARD.substitute(
        pretty_name=repo_id.split("/")[1], size_category=size_category(count), repo_id=repo_id, count=f"{count:,}",
        documents=manifest.get("documents", "image"), vocab_size=f"{manifest['vocab_size']:,}",
        images=images, models="\n".join(lines), model_args="".join(args),
        dense=f"{manifest['dense_size']}-d" if manifest.get("dense_size") else "none",
        precision=manifest.get("precision", "float32"), format_version=manifest["format_version"],
        saved=manifest.get("saved", "unknown"), source=source_line,
        files="\n".join(f"| {name} | {record['bytes']:,} |" for name, record in sorted(files.items())),
    )


def _recorded_models(manifest: dict) -> dict[str, dict]:
    """{role: {"id", "revision", ...}} of the backbone, head and tokenizer a checked manifest records ({} when
    unknown: `check_manifest` allows a missing record or role, never one of another type)."""
    models = manifest.get("models", {})
    return {role: models.get(role, {}) for role in _DEFAULTS}


def local_models(manifest: dict) -> list[str]:
    """Roles whose recorded model is a local folder rather than a Hub model (a backbone or head loaded from the
    Hub records its commit): others cannot load it by that name."""
    return [role for role, ref in _recorded_models(manifest).items()
            if ref.get("id") and (not _MODEL_ID.fullmatch(str(ref["id"]))
                                  or role != "tokenizer" and not ref.get("revision"))]


_MACHINE_PATH = re.compile(r"^(/|~|\\\\|[A-Za-z]:[\\/]|file:)")  # /home/..., ~/..., \\server, C:\..., file:...


def _machine_paths(value: object, field: str = "") -> list[str]:
    """The fields of a manifest (or an item) whose text looks like an absolute path on a machine: `a.b[2]` names."""
    if isinstance(value, dict):
        return [found for key, inner in value.items() for found in _machine_paths(inner, f"{field}.{key}".lstrip("."))]
    if isinstance(value, list):
        return [found for i, inner in enumerate(value) for found in _machine_paths(inner, f"{field}[{i}]")]
    return [field] if isinstance(value, str) and _MACHINE_PATH.match(value) else []


def size_category(count: int) -> str:
    """The Hub's size_categories value for `count` rows."""
    return next((label for limit, label in _SIZES if count < limit), "n>1T")


def _refuse_machine_paths(folder: Path, manifest: dict) -> None:
    """InputError naming the first manifest or item field that holds an absolute path of this machine."""
    found = [f"manifest.json: {name}" for name in _machine_paths(manifest)]
    if not found:
        for row, item in enumerate(read_jsonl(folder / ITEMS_FILE)):
            found += [f"items.jsonl row {row}: {name}" for name in _machine_paths(item)]
            if found:
                break
    if found:
        raise InputError(f"{folder.name} names a path of this machine"
                         f" ({found[0]}{' and more' if len(found) > 1 else ''});"
                         " nothing was published. Rebuild the index with this mlsr (it records folders by name and"
                         " images relative to the index), or edit that field.")


def _count_local_images(folder: Path) -> int:
    """Items whose image is a file on this machine and that have no thumbnail in the index: they show a placeholder."""
    items = read_jsonl(folder / ITEMS_FILE)
    offsets_file = folder / THUMBNAIL_FILES["offsets"]
    pictured = (np.diff(np.load(offsets_file, allow_pickle=False)) > 0 if offsets_file.is_file()
                else np.zeros(len(items), bool))
    return sum(1 for item, has in zip(items, pictured) if not has and item.get("image")
               and not str(item["image"]).startswith(("http://", "https://")))


def push_index(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
               api=None) -> PushReport:
    """Upload index folder `folder` to dataset repo `repo_id` (created when missing) in one commit.

    `private` makes the repo private (also an existing one); without it an existing repo keeps its
    visibility. `api` is an `huggingface_hub.HfApi` (default: one with `token`, else the saved login).
    """
    repo_id = check_repo_id(repo_id, HUB_PREFIX)
    folder = Path(folder)
    manifest = read_manifest(folder)  # every size and checksum: a damaged index is never published
    _refuse_machine_paths(folder, manifest)
    local_images = _count_local_images(folder)
    card = dataset_card(manifest, repo_id, local_images)
    from huggingface_hub import CommitOperationAdd, HfApi

    from mlsr.models.hub import pushing

    api = api or HfApi(token=token)
    names = [*sorted(manifest["files"]), MANIFEST_FILE]
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in names]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode("utf-8")))
    with pushing(f"dataset {repo_id}", " (files already uploaded are not sent twice)"):
        url = api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
        if private:
            api.update_repo_settings(repo_id, private=True, repo_type="dataset")
        message = f"mlsr index: {manifest['count']:,} {manifest.get('documents', 'image')} documents"
        commit = api.create_commit(repo_id, operations, repo_type="dataset", commit_message=message)
    return PushReport(repo_id, str(url), getattr(commit, "oid", None), len(names) + 1,
                      sum(int(manifest["files"][name]["bytes"]) for name in manifest["files"]),
                      local_images, local_models(manifest))
