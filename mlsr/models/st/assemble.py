"""An mlsr `Encoder` as a sentence-transformers `SparseEncoder`: built in memory, written as a standard folder
(`modules.json`, `config_sentence_transformers.json`, one folder per module, a model card), pushed to the Hub.

`load_sparse_encoder(DIR or OWNER/NAME)` reads such a folder back with mlsr's own two module classes
(`mlsr.models.st.input.MlsrInput`, `mlsr.models.st.head.D2SHead`): nothing named by the folder is imported, and
only configs, tokenizers and safetensors weights are read, so a downloaded model runs no code of its own.
sentence-transformers itself (`SparseEncoder(DIR, ...)`) loads it only with remote code allowed, which for a
downloaded repo means trusting whatever Python files the repo holds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from mlsr._files import atomic_write_json, replace_folder, staging_folder
from mlsr.checks import check_repo_id
from mlsr.errors import InputError, ModelLoadError
from mlsr.settings import ENCODE_MODES

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from sentence_transformers import SparseEncoder

    from mlsr.models.encoder import Encoder

CARD = Template(Path(__file__).with_name("card.md").read_text(encoding="utf-8"))
CARD_FILE = "README.md"
_EXPORT_FILE = "mlsr_export.json"  # what the card says, kept so that a push can write the card for its repo id
_MODULES_FILE = "modules.json"


def to_sparse_encoder(encoder: Encoder, *, query_mode: str = "expand",
                      document_mode: str = "no_expand") -> SparseEncoder:
    """A `SparseEncoder` over the encoder's own backbone, head and term tokenizer (shared, not copied).

    `query_mode` / `document_mode` ("expand" or "no_expand") say how `encode_query` / `encode_document`
    encode texts; images are always expanded, and `encode` without a task expands.
    """
    for name, mode in (("query_mode", query_mode), ("document_mode", document_mode)):
        if mode not in ENCODE_MODES:
            raise InputError(f"{name} must be one of {ENCODE_MODES}, got {mode!r}.")
    backbone = encoder._need_backbone()
    try:
        from sentence_transformers import SparseEncoder
    except ImportError:
        raise ModelLoadError("sentence-transformers is not installed: pip install 'mlsr[st]'.") from None
    from mlsr.models.st.head import D2SHead
    from mlsr.models.st.input import MlsrInput

    modules: list[torch.nn.Module] = [
        MlsrInput(backbone, encoder.tokenizer, encoder.max_chars, query_mode, document_mode), D2SHead(encoder.head)]
    model = SparseEncoder(modules=modules, device=str(encoder.head.proj.weight.device), similarity_fn_name="dot")
    # torch's stubs type a module's attributes as Tensor | Module; this one is a plain dict for the model card.
    model.mlsr_card = _card_fields(encoder, query_mode, document_mode)  # type: ignore[assignment]
    return model


_MODULE_TYPES = ["mlsr.models.st.input.MlsrInput", "mlsr.models.st.head.D2SHead"]  # what export-st writes


def load_sparse_encoder(name_or_path: str | Path, *, revision: str | None = None, device: str | None = None,
                        token: str | None = None) -> SparseEncoder:
    """A `SparseEncoder` from an export-st folder or Hub model repo, built from mlsr's own module classes: the
    folder's `modules.json` must name exactly them, and no code of the folder or repo is imported or run."""
    try:
        from sentence_transformers import SparseEncoder
    except ImportError:
        raise ModelLoadError("sentence-transformers is not installed: pip install 'mlsr[st]'.") from None
    from mlsr.models.st.head import D2SHead
    from mlsr.models.st.input import MlsrInput

    listed = _modules_of(str(name_or_path), revision, token)
    if [entry.get("type") for entry in listed] != _MODULE_TYPES:
        raise ModelLoadError(f"{name_or_path} is not a model written by export-st: its {_MODULES_FILE} lists"
                             f" {[entry.get('type') for entry in listed]}, not {_MODULE_TYPES}.")
    name = str(name_or_path)
    modules: list[torch.nn.Module] = [
        MlsrInput.load(name, subfolder=listed[0].get("path", ""), revision=revision, token=token),
        D2SHead.load(name, subfolder=listed[1].get("path", ""), revision=revision, token=token)]
    return SparseEncoder(modules=modules, device=device, similarity_fn_name="dot")


def _modules_of(name_or_path: str, revision: str | None, token: str | None) -> list[dict]:
    """The entries of a model's modules.json (a local folder's, or a Hub repo's, downloaded alone)."""
    path = Path(name_or_path) / _MODULES_FILE
    try:
        if not path.is_file():
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(name_or_path, _MODULES_FILE, revision=revision, token=token))
        listed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{name_or_path} has no readable {_MODULES_FILE} ({type(error).__name__}).") from None
    if not isinstance(listed, list) or not all(isinstance(entry, dict) for entry in listed):
        raise ModelLoadError(f"{name_or_path}: {_MODULES_FILE} is not a list of modules.")
    return listed


def _card_fields(encoder: Encoder, query_mode: str, document_mode: str) -> dict:
    """What the model card says about the models and modes (names as an index records them)."""
    record, backbone = encoder.models(), encoder._need_backbone()
    return {"backbone": record.backbone.id or "unknown", "head": record.head.id or "unknown",
            "tokenizer": record.tokenizer.id or "unknown", "backbone_type": backbone.model_type.upper(),
            "dense_size": encoder.dense_size, "vocab_size": f"{encoder.vocab_size:,}",
            "max_tokens": backbone.max_text_tokens, "query_mode": query_mode,
            "document_mode": document_mode}


def model_card(fields: dict, name: str, repo: str) -> str:
    """The README.md of an exported model: modalities, models, modes and usage (`repo`: how to load it)."""
    return CARD.substitute(fields, name=name, repo=repo)


def check_export_target(path: str | Path, overwrite: bool = False, how: str = "overwrite=True") -> Path:
    """`path` if a model may be written there: nothing, an empty folder, or (with `overwrite`) an earlier export."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file, not a model folder; nothing was changed.")
    if path.exists() and any(path.iterdir()):
        if not (path / _MODULES_FILE).is_file():
            raise InputError(f"{path} exists and is not a sentence-transformers model folder; refusing to overwrite"
                             " it. Choose another folder.")
        if not overwrite:
            raise InputError(f"{path} holds a sentence-transformers model already; nothing was changed. To replace"
                             f" it, say so ({how}), or choose another folder.")
    return path


def _save_sparse_encoder(model: SparseEncoder, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write `model` (from `to_sparse_encoder`) to folder `out` atomically, with its model card."""
    out = check_export_target(out, overwrite)
    staging = staging_folder(out)
    try:
        model.save(str(staging), create_model_card=False)
        fields = getattr(model, "mlsr_card", None)
        if fields:
            atomic_write_json(staging / _EXPORT_FILE, fields)
            (staging / CARD_FILE).write_text(model_card(fields, out.name, out.name), encoding="utf-8")
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def export_sparse_encoder(encoder: Encoder, out: str | Path, *, overwrite: bool = False,
                          query_mode: str = "expand", document_mode: str = "no_expand") -> Path:
    """`to_sparse_encoder` then `_save_sparse_encoder`: the folder `load_sparse_encoder(out)` reads back."""
    check_export_target(out, overwrite)  # before any work
    model = to_sparse_encoder(encoder, query_mode=query_mode, document_mode=document_mode)
    return _save_sparse_encoder(model, out, overwrite=overwrite)


def push_sparse_encoder(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                        api=None) -> str:
    """Upload an exported folder to model repo `repo_id` (created when missing) in one commit; its card then
    loads the model by `repo_id`. Returns the repo's URL. `api`: an `huggingface_hub.HfApi` (default: a new one)."""

    repo_id = check_repo_id(repo_id)
    folder = Path(folder)
    if not (folder / _MODULES_FILE).is_file():
        raise InputError(f"{folder} is not an exported model (it has no {_MODULES_FILE}); nothing was published.")
    from huggingface_hub import CommitOperationAdd, HfApi

    from mlsr.models.hub import pushing

    api = api or HfApi(token=token)
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.name != CARD_FILE)
    operations = [CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
                  for path in files]
    card = _card_for(folder, repo_id)
    if card is not None:
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode("utf-8")))
    with pushing(f"model {repo_id}"):
        url = api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
        api.create_commit(repo_id, operations, repo_type="model", commit_message="mlsr sparse encoder (export-st)")
    return str(url)


def _card_for(folder: Path, repo_id: str) -> str | None:
    """The model card with `repo_id` in its usage (from the export's saved fields), or None without them."""
    try:
        fields = json.loads((folder / _EXPORT_FILE).read_text(encoding="utf-8"))
        return model_card(fields, repo_id.split("/")[1], repo_id)
    except (OSError, ValueError, KeyError):
        return None
