"""Where an index is: a local folder, or a dataset repo on the Hugging Face Hub resolved into the local cache.

The rule, the same in every place that takes an index (`SparseIndex.load`, `--index`, `MLSR_INDEX`):

1. A `pathlib.Path` is always a folder, and so is any name of an existing file or folder: local wins.
2. `hf://datasets/OWNER/NAME[@REVISION]` (huggingface_hub's own spelling of a dataset repo) is always a Hub id.
3. A bare `OWNER/NAME[@REVISION]` that names nothing here is a Hub id, unless a folder `OWNER` exists here:
   then it is a missing folder the user meant (`index/mscoco-test` before `prepare` has built it).
4. Anything else (absolute or `./` paths, more than one `/`, ...) is a folder.

A Hub index is downloaded with the same code that resolves models (`mlsr.models.hub`, repo type
"dataset"), once, into the Hugging Face cache; offline, the cached copy is used. Only the manifest and
the files it lists are fetched, at one commit. The folder that results is then read and verified by
`mlsr.index.folder` exactly like a local one (sizes, checksums, postings). huggingface_hub is imported
only when a Hub id is resolved, so loading a local index stays light.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mlsr.checks import REPO_NAME_PART, not_a_url
from mlsr.errors import IndexFormatError, InputError, ModelLoadError
from mlsr.index.manifest import MANIFEST_FILE

HUB_PREFIX = "hf://datasets/"
_HUB_ID = re.compile(rf"({REPO_NAME_PART}/{REPO_NAME_PART})(?:@(\S+))?")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # what mlsr writes; never a glob pattern


@dataclass(frozen=True)
class HubIndexId:
    """A dataset repo on the Hub and the revision (branch, tag or commit) asked for; None means `main`."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class IndexLocation:
    """Where an index was found: its local folder and, for a Hub index, the repo and the commit read."""

    name: str  # as the user gave it
    folder: Path
    repo_id: str | None = None
    commit: str | None = None

    @property
    def label(self) -> str:
        """How messages and the app name the index: the folder as given, or `owner/name@commit` (usable as --index)."""
        if self.repo_id is None:
            return self.name
        return self.repo_id if self.commit is None else f"{self.repo_id}@{self.commit}"


def parse_hub_id(name: str | Path) -> HubIndexId | None:
    """The Hub dataset id that `name` stands for, or None when it names a local folder (see the module's rule)."""
    if isinstance(name, Path):
        return None
    text = str(name)
    if text.startswith("hf://"):
        match = _HUB_ID.fullmatch(text[len(HUB_PREFIX):]) if text.startswith(HUB_PREFIX) else None
        if match is None:
            raise InputError(f"{text!r} is not a Hub index id; write {HUB_PREFIX}OWNER/NAME or"
                             f" {HUB_PREFIX}OWNER/NAME@REVISION (an index is a dataset repo).")
        return HubIndexId(match[1], match[2])
    if Path(text).expanduser().exists():
        return None
    match = _HUB_ID.fullmatch(text)
    if match is None or Path(match[1].split("/")[0]).is_dir():
        return None
    return HubIndexId(match[1], match[2])


def is_hub_index(name: str | Path) -> bool:
    """True when `name` is resolved on the Hub rather than read as a local folder."""
    return parse_hub_id(name) is not None


def locate_index(name: str | Path) -> IndexLocation:
    """The local folder of index `name`: the folder itself, or the cached snapshot of its Hub dataset repo."""
    if not str(name).startswith(HUB_PREFIX):  # an index is a folder or OWNER/NAME (hf://...), never fetched from a URL
        not_a_url(name, "index", IndexFormatError)
    hub = parse_hub_id(name)
    if hub is None:
        return IndexLocation(str(name), Path(name).expanduser())
    try:
        return _download_index(hub, str(name))
    except ModelLoadError as error:
        if str(name).startswith(HUB_PREFIX) or hub.revision is not None:
            raise
        raise ModelLoadError(f"{error} (If {str(name)!r} is meant as a local folder: there is none; build it with"
                             f" `python -m mlsr build-index --images DIR --out {name}`.)") from None


def _download_index(hub: HubIndexId, name: str | None = None) -> IndexLocation:
    """Fetch an index's manifest, then the files it lists at the same commit (each only when not cached yet)."""
    from mlsr.models.hub import download

    first = download(hub.repo_id, [MANIFEST_FILE], revision=hub.revision, repo_type="dataset", what="index")
    files = _listed_files(first.folder, hub)
    # the commit of the first step pins the second: a push in between cannot mix two versions
    source = download(hub.repo_id, [MANIFEST_FILE, *files], revision=first.revision or hub.revision,
                      repo_type="dataset", what="index")
    return IndexLocation(name or str(hub), source.folder, hub.repo_id, source.revision)


def _listed_files(folder: Path, hub: HubIndexId) -> list[str]:
    """The file names a Hub index's manifest lists; the full checks come later, in `mlsr.index.folder`."""
    where = f"Hub dataset {hub}"
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{where} holds no {MANIFEST_FILE}: it is not an mlsr index"
                               " (publish one with `python -m mlsr push-index DIR OWNER/NAME`).") from None
    except (OSError, ValueError) as error:
        raise IndexFormatError(f"{where}: {MANIFEST_FILE} cannot be read ({error}).") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(n, str) and _FILE_NAME.fullmatch(n) for n in files):
        raise IndexFormatError(f"{where}: {MANIFEST_FILE} does not list the index's files as mlsr writes them.")
    return sorted(files)


def cached_copy_hint(location: IndexLocation) -> str:
    """What to do when the cached copy of a Hub index fails its checks (altered, or a download cut short)."""
    return (f" This is the cached copy of Hub dataset {location.label}: remove it with"
            f" `hf cache rm dataset/{location.repo_id}` and load it again to download it afresh.")
