"""The app's first start: a Hub index it downloads, a missing index it builds from published vectors, and what
to say when it cannot.

A Space configured with a published index (`MLSR_INDEX=owner/name`) downloads that folder once into the
Hugging Face cache and starts from it; one configured with a folder (the default `index/mscoco-test`, or
`MLSR_INDEX=/data/index/mscoco-test` with `MLSR_DATASET`) builds it from the published vectors once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from mlsr.errors import InputError
from mlsr.index.folder import manifest_as_is
from mlsr.index.hub import is_hub_index
from mlsr.settings import DEFAULT_DATASET, DEFAULT_INDEX

FirstStart = Literal["load", "download", "build"]


def prepare_command(index_dir: str | Path, dataset: str | Path = DEFAULT_DATASET) -> str:
    """The command that builds a missing default index, for messages."""
    extra = "" if str(dataset) == DEFAULT_DATASET else f" --dataset {dataset}"
    return f"python -m mlsr prepare --index {index_dir}{extra}"


def _builds_on_first_start(index_dir: str | Path, dataset: str | None) -> bool:
    """The app builds a missing index from published vectors when it is the default one or a dataset is named."""
    return dataset is not None or Path(index_dir) == Path(DEFAULT_INDEX)


def first_start(index: str | Path, dataset: str | None) -> FirstStart:
    """What starting the app does with `index`.

    load: an existing folder (or a missing one nobody said how to build: loading it says so);
    download: a Hub dataset id (`owner/name[@revision]`, see `mlsr.index.hub`): fetched once into the
    Hugging Face cache, then read from there; build: a missing folder made from published vectors (the
    default gallery, or any folder when `dataset` is given). The default index is always a folder.
    """
    if Path(index).exists():
        return "load"
    if Path(index) != Path(DEFAULT_INDEX) and is_hub_index(index):
        return "download"
    return "build" if _builds_on_first_start(index, dataset) else "load"


def missing_index_hint(index_dir: str | Path, dataset: str | None) -> str:
    """What to run when the app's index is missing and could not be built here (offline), or ''."""
    try:
        if Path(index_dir).exists() or first_start(index_dir, dataset) != "build":
            return ""
    except InputError:  # not a usable index name at all: the error itself says so
        return ""
    dataset = dataset or DEFAULT_DATASET
    size = " (a download of roughly 0.3 GB)" if dataset == DEFAULT_DATASET else ""
    return (f" To build it from the published vectors of {dataset}{size}, run"
            f" `{prepare_command(index_dir, dataset)}` on a machine that reaches the Hugging Face Hub.")


def start_index(index: str | Path, dataset: str | None, *, head: str, tokenizer: str,
                device: str | None = None) -> str | Path:
    """Do what the first start needs for `index` (see `first_start`) and return what to load: a folder, or the Hub id.

    Runs before the launch, with a console progress bar; later starts find the folder (or the cached
    Hub copy) and reuse it.
    """
    step = first_start(index, dataset)
    if step == "download":
        print(f"mlsr: loading index {index} from the Hugging Face Hub (downloaded once into the cache; later starts"
              " read it there)", file=sys.stderr)
        return str(index)
    if step == "build":
        _build_missing_index(Path(index), dataset or DEFAULT_DATASET, head=head, tokenizer=tokenizer, device=device)
    return Path(index)  # a Path is always read as a folder, never as a Hub id


def _build_missing_index(index: Path, dataset: str, *, head: str, tokenizer: str, device: str | None = None) -> None:
    """Build the missing folder `index` from the published vectors of `dataset`, with a console progress bar."""
    from mlsr.progress import print_pictures, progress_bar
    from mlsr.ingest.published import ensure_index

    print(f"mlsr: first start: building {index} from {dataset} (once; later starts reuse it)", file=sys.stderr)
    bar, set_total = progress_bar(f"building {index}")
    pictures, set_pictures = progress_bar("thumbnails", unit="img")
    with bar, pictures:
        report = ensure_index(index, dataset=dataset, head=head, tokenizer=tokenizer, device=device,
                              progress=bar.update, total=set_total, picture_progress=pictures.update,
                              picture_total=set_pictures)
    if report is not None:
        print_pictures(report.pictures_made, report.no_picture, report.fetch_seconds)


def public_text(text: str, names: list[str | Path]) -> str:
    """`text` with each of the given local paths (as given and resolved) cut to its last part: the page a visitor
    sees names folders, never where they lie on the server (the console keeps the full message)."""
    for name in names:
        path = Path(name).expanduser()
        if not (path.is_absolute() or path.exists()):
            continue  # a Hub id or a relative name: nothing of the server's layout in it
        for form in sorted({str(name), str(path), str(path.resolve())}, key=len, reverse=True):
            if len(Path(form).parts) > 1:
                text = text.replace(form, path.name)
    return text


def startup_guide(index_dir: str | Path, *, backbone: str, head: str, tokenizer: str,
                  broken_index: bool = False) -> str:
    """Markdown for the page the app serves when it cannot start: what it needs, the commands, where files go.

    With `broken_index` (the index folder exists but cannot be used), the command that rebuilds it, from its own
    manifest; models that are local folders are not offered for download.
    """
    index = str(index_dir)
    rebuild = _rebuild_command(Path(index)) if broken_index and Path(index).is_dir() else None
    get_index = (f"## Rebuild the index\n`{index}` cannot be used as it is; rebuild it as it was"
                 f" built:\n```\n{rebuild}\n"
                 f"python app.py --index {index}\n```" if rebuild else
                 f"## On a machine that reaches the Hugging Face Hub\n```\npython -m mlsr prepare --index {index}"
                 f"     # the COCO test images from published vectors (~0.3 GB)\npython app.py --index {index}\n```")
    models = {"backbone": backbone, "head": head, "tokenizer": tokenizer}
    hub_models = {role: name for role, name in models.items() if not Path(name).expanduser().exists()}
    downloads = "\n".join(f"hf download {name} --local-dir models/{role}" for role, name in hub_models.items())
    offline = (f"""## Offline: bring the model folders with you
On a machine with Hub access, download each model into a folder, copy the folders here, and name them:
```
{downloads}
python app.py {" ".join(f"--{role} models/{role}" for role in hub_models)} --index {index}
```
Copying a prepared index folder (and the Hub cache folder) works the same way.
""" if hub_models else "")
    return f"""## What the app needs
- **Three models**, each a Hugging Face Hub id or a local folder: the backbone `{backbone}`
  (`--backbone`, env `MLSR_BACKBONE`), the sparse head `{head}` (`--head`, `MLSR_HEAD`) and its tokenizer
  `{tokenizer}` (`--tokenizer`, `MLSR_TOKENIZER`). Hub models are downloaded once into the Hub cache
  (`~/.cache/huggingface/hub`, or `$HF_HOME/hub`); later starts read them from there, offline too.
- **An index folder**, `{index}` (`--index`, `MLSR_INDEX`): the images' term vectors, built once.

{get_index}

{offline}
## Your own images instead
```
python -m mlsr build-index --images PHOTOS --captions captions.csv --dense --out index/mine
python app.py --index index/mine
```
"""


def _rebuild_command(index_dir: Path) -> str | None:
    """The command that builds `index_dir` again as its manifest says it was built (read as it is, unverified), or
    None when the manifest does not say (or cannot be read)."""
    manifest = manifest_as_is(index_dir)
    build = manifest.get("build") if manifest is not None and isinstance(manifest.get("build"), dict) else {}
    if manifest is None or not build:
        return None
    extra = f" --precision {manifest['precision']}" if manifest.get("precision") in ("uint8", "float32") else ""
    source = build["source"] if isinstance(build.get("source"), dict) else {}
    if source.get("dataset"):
        return (f"python -m mlsr import-dense --dataset {source['dataset']} --split {source.get('split', 'test')}"
                f" --out {index_dir}{extra} --overwrite")
    if not isinstance(build.get("images"), str):
        return None
    images = Path(build["images"]) if Path(build["images"]).is_absolute() else index_dir / build["images"]
    images = Path(os.path.relpath(images))  # from here: the page never shows where the server keeps it
    documents = manifest.get("documents", "image")
    captions = "" if documents == "image" else " --captions CAPTIONS_FILE"
    dense = " --dense" if manifest.get("dense_size") else ""
    return (f"python -m mlsr build-index --images {os.path.normpath(images)}{captions} --doc {documents}{dense}"
            f"{extra} --out {index_dir} --overwrite")
