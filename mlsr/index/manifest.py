"""The manifest of an index folder: the names of its files and fields, its own checksum (the seal), its schema.

`check_manifest` reads a manifest as a schema: every field's type, range and allowed values, the fields
that must agree with each other, and first the seal, so that a damaged manifest is blamed on itself and
never on a file it lists. `mlsr.index.folder` writes and reads the folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import NoReturn, TypeGuard

from mlsr.checks import shown
from mlsr.errors import IndexFormatError
from mlsr.settings import DOCUMENTS, PRECISIONS
from mlsr.vocab import VOCAB_FILE

FORMAT = "mlsr-index"
FORMAT_VERSION = 3
MANIFEST_FILE = "manifest.json"
SPARSE_FILE = "sparse.npz"  # format 1: documents x vocabulary CSR float32
# format 3: the blocked inverted layout (mlsr.index.inverted), one .npy per array (memory-mapped on load)
POSTING_FILES = {
    "indptr": "postings.indptr.npy",
    "docs": "postings.docs.npy",
    "weights": "postings.weights.npy",
    "dense_terms": "postings.dense_terms.npy",
    "dense_weights": "postings.dense_weights.npy",
    "scales": "postings.scales.npy",
    "dense_indptr": "postings.dense_indptr.npy",
    "dense_scales": "postings.dense_scales.npy",
}
# format 2 (one posting list per term, int32 rows) had the first five names, with other contents (mlsr.index.checks)
FORMAT2_FILES = {name: POSTING_FILES[name] for name in ("indptr", "docs", "weights", "dense_terms", "dense_weights")}
ITEMS_FILE = "items.jsonl"
# the forward view (mlsr.index.forward): each row's terms and weights, memory-mapped (an index saved without it
# derives it on first use)
FORWARD_FILES = {"indptr": "forward.indptr.npy", "terms": "forward.terms.npy", "weights": "forward.weights.npy"}
THUMBNAIL_FILES = {"offsets": "thumbnails.offsets.npy", "data": "thumbnails.data.npy"}  # mlsr.index.thumbnails
DENSE_FILE = "dense.npy"
# The manifest's own checksum (sha256 of every other field as sorted, compact JSON), computed the same way in
# every format version: a flipped bit anywhere in the manifest is blamed on the manifest, not on a file it lists.
SEAL_FIELD = "manifest_sha256"
# Manifest fields computed on save; everything else in a manifest is the index's `info`.
DERIVED_FIELDS = {
    "format", "format_version", "count", "vocab_size", "vocab_sha256", "dense_size", "saved", "files",
    "precision", "postings", "block_size", "thumbnails", "forward", SEAL_FIELD,
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def postings_field(version: int) -> str:
    """The `postings` count of dense columns: one per term in format 2, one per term and block in format 3."""
    return "dense_terms" if version <= 2 else "dense_columns"


def _required_files(version: int) -> list[str]:
    """The files every index folder of this format version lists."""
    postings = {1: [SPARSE_FILE], 2: list(FORMAT2_FILES.values())}.get(version, list(POSTING_FILES.values()))
    return [*postings, ITEMS_FILE]


def sealed(manifest: dict) -> dict:
    """The manifest with its own checksum (`manifest_sha256`) over every other field."""
    return {**{key: value for key, value in manifest.items() if key != SEAL_FIELD}, SEAL_FIELD: _seal(manifest)}


def _seal(manifest: dict) -> str:
    body = {key: value for key, value in manifest.items() if key != SEAL_FIELD}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_manifest(manifest: dict, where: str, error: type[Exception] = IndexFormatError,
                   fix: str = "rebuild the index") -> None:
    """Raise IndexFormatError, naming the field, unless the manifest has every required field with a valid value.

    Checked: the manifest's own checksum first (indexes saved before it was added have none), so that
    a damaged manifest is blamed on itself; then the format version (a whole number this mlsr reads), sizes (whole
    numbers in range), hashes (64 hex
    digits), enums (`precision` from `mlsr.settings.PRECISIONS`, `documents` from DOCUMENTS),
    the file table, the `models` record, and fields that must agree with each other. `save` runs the
    same checks (with `error` InputError) so that no index is written that would be refused on load.
    """
    def refuse(field: str, problem: str) -> NoReturn:
        raise error(f"{where}: {MANIFEST_FILE}: {field!r} {problem}; {fix}.")

    if SEAL_FIELD in manifest and manifest[SEAL_FIELD] != _seal(manifest):
        raise IndexFormatError(f"{where}: {MANIFEST_FILE} does not match its own checksum (altered); rebuild the"
                               f" index.")
    damaged_seal = [key for key in manifest if key != SEAL_FIELD and _one_letter_apart(key, SEAL_FIELD)]
    if damaged_seal:  # a flipped bit in the seal's own name would otherwise pass as an unsealed manifest
        refuse(damaged_seal[0], f"is not a field of the format (a damaged {SEAL_FIELD!r}?)")
    version = manifest.get("format_version")
    if not _whole(version, 1):
        refuse("format_version", f"must be a whole number >= 1, {_got(manifest, 'format_version')}")
    if version > FORMAT_VERSION:
        raise IndexFormatError(f"{where} has format version {version}; this mlsr reads up to {FORMAT_VERSION}."
                               " Upgrade mlsr.")
    for field, low in (("count", 0), ("vocab_size", 1)):
        if not _whole(manifest.get(field), low):
            refuse(field, f"must be a whole number >= {low}, {_got(manifest, field)}")
    files = manifest.get("files")
    required = _required_files(version)
    if not isinstance(files, dict) or any(name not in files for name in required):
        got = "" if isinstance(files, dict) else f", {_got(manifest, 'files')}"
        refuse("files", f"must list {', '.join(required)}{got}")
    for name, record in files.items():
        if Path(name).name != name or name in ("", ".", "..", MANIFEST_FILE):
            raise IndexFormatError(f"{where}: the manifest names a file outside the folder ({shown(name)}).")
        if not isinstance(record, dict) or not _whole(record.get("bytes"), 0) or not _hash(record.get("sha256")):
            refuse(f"files.{name}", f"must be {{'bytes': a whole number, 'sha256': 64 hex digits}}, got"
                                    f" {shown(record)}")
    _check_optional(manifest, refuse, files, version)


def _check_optional(manifest: dict, refuse, files: dict, version: int) -> None:
    """The fields that may be absent (or null), and the ones that must agree with the file table."""

    sha = manifest.get("vocab_sha256")
    if not (sha is None or _hash(sha)) or (VOCAB_FILE in files) != (sha is not None):
        refuse("vocab_sha256", f"must be 64 hex digits when {VOCAB_FILE} is listed and null otherwise, got"
                               f" {shown(sha)}")
    dense_size = manifest.get("dense_size")
    if not (dense_size is None or _whole(dense_size, 1)) or (DENSE_FILE in files) != (dense_size is not None):
        refuse("dense_size", f"must be a whole number >= 1 when {DENSE_FILE} is listed and null otherwise,"
                             f" got {shown(dense_size)}")
    if (version >= 2 or "precision" in manifest) and not _one_of(manifest.get("precision"), PRECISIONS):
        refuse("precision", f"must be one of {', '.join(sorted(PRECISIONS))}, {_got(manifest, 'precision')}")
    postings, dense = manifest.get("postings"), postings_field(version)
    if version >= 2 and not (isinstance(postings, dict) and _whole(postings.get("stored"), 0)
                             and _whole(postings.get(dense), 0)):
        refuse("postings", f"must be {{'stored': n, {dense!r}: m}} (whole numbers), {_got(manifest, 'postings')}")
    if version >= 3 and not (_whole(manifest.get("block_size"), 1) and manifest["block_size"] <= 1 << 16):
        refuse("block_size", f"must be a whole number in 1..65,536, {_got(manifest, 'block_size')}")
    if "documents" in manifest and not _one_of(manifest["documents"], DOCUMENTS):
        refuse("documents", f"must be one of {', '.join(DOCUMENTS)}, got {shown(manifest['documents'])}")
    _check_thumbnails(manifest, refuse, files)
    listed = [name in files for name in FORWARD_FILES.values()]
    if any(listed) and not all(listed):
        refuse("files", f"must list all of {', '.join(FORWARD_FILES.values())}, or none")
    if ("forward" in manifest) != all(listed) or ("forward" in manifest and not _whole(manifest["forward"], 0)):
        refuse("forward", "must count the forward view's postings exactly when its files are listed,"
                          f" {_got(manifest, 'forward')}")
    lineage = manifest.get("lineage")
    if lineage is not None and not (isinstance(lineage, str) and re.fullmatch(r"[0-9a-f]{16,64}", lineage)):
        refuse("lineage", f"must be 16 to 64 hex digits, got {shown(lineage)}")
    if "saved" in manifest and not isinstance(manifest["saved"], str):
        refuse("saved", f"must be a date (text), got {shown(manifest['saved'])}")
    if "models" in manifest:
        problem = _models_problem(manifest["models"], manifest["vocab_size"])
        if problem:
            refuse("models", problem)
    elif "documents" in manifest:  # mlsr's builders record both: one without the other was edited away
        refuse("models", "is missing (mlsr records the models of every index it builds; it was deleted?)")


def _check_thumbnails(manifest: dict, refuse, files: dict) -> None:
    """`thumbnails` (rows with a picture) is there exactly when both thumbnail files are listed, at most `count`."""
    listed = [name in files for name in THUMBNAIL_FILES.values()]
    if any(listed) and not all(listed):
        refuse("files", f"must list both {' and '.join(THUMBNAIL_FILES.values())}, or neither")
    count = manifest.get("thumbnails")
    if ("thumbnails" in manifest) != all(listed) or ("thumbnails" in manifest and not (
            _whole(count, 0) and count <= manifest["count"])):
        refuse("thumbnails", "must count the rows with a picture (0..count) exactly when the thumbnail files are"
                             f" listed, {_got(manifest, 'thumbnails')}")


def _models_problem(models: object, vocab_size: int) -> str:
    """What is wrong with a manifest's `models` record ('' when nothing is)."""
    if not isinstance(models, dict):
        return f"must be a record of the backbone, head and tokenizer, got {shown(models)}"
    for role in ("backbone", "head", "tokenizer"):
        ref = models.get(role, {})
        if not isinstance(ref, dict) or any(not (ref.get(key) is None or isinstance(ref.get(key), str))
                                            for key in ("id", "revision", "fingerprint")):
            return f"{role} must be {{'id', 'revision', 'fingerprint'}} (text or null), {_got(models, role)}"
    if "vocab_size" in models and (models["vocab_size"] != vocab_size or isinstance(models["vocab_size"], bool)):
        return f"vocab_size must equal the index's {vocab_size}, got {shown(models.get('vocab_size'))}"
    if not (models.get("vocab_sha256") is None or _hash(models.get("vocab_sha256"))):
        return f"vocab_sha256 must be 64 hex digits or null, got {shown(models.get('vocab_sha256'))}"
    if not (models.get("dense_size") is None or _whole(models.get("dense_size"), 1)):
        return f"dense_size must be a whole number >= 1 or null, got {shown(models.get('dense_size'))}"
    return ""


def _got(record: dict, key: str) -> str:
    return f"got {shown(record[key])}" if key in record else "but it is missing"


def _one_letter_apart(first: str, second: str) -> bool:
    return len(first) == len(second) and sum(a != b for a, b in zip(first, second)) == 1


def _one_of(value: object, allowed) -> bool:
    """True for a text among `allowed` (a list or a number never is: no unhashable lookup, no 1 == True)."""
    return isinstance(value, str) and value in allowed


def _whole(value: object, low: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _hash(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA256.match(value))
