"""Training checkpoints: the head, the optimizer state and the run state as one folder, written atomically.

Nothing is pickled: tensors go to safetensors, every scalar to JSON.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mlsr._files import atomic_path, atomic_write_json, replace_folder, staging_folder
from mlsr.errors import InputError, ModelLoadError
from mlsr.models.head import SparseHead

CHECKPOINT_DIR = "checkpoint"
_OPTIMIZER_FILE = "optimizer.safetensors"
_STATE_FILE = "state.json"
_STATE_FORMAT = 1


def save_checkpoint(folder: Path, head: SparseHead, optimizer: torch.optim.Optimizer, state: dict,
                    scaler: torch.amp.GradScaler | None = None) -> None:
    """Write head weights, optimizer state (safetensors) and run state (JSON) as one folder, atomically.

    Nothing is pickled: tensors go to safetensors, every scalar to JSON.
    """
    folder = Path(folder)
    staging = staging_folder(folder)
    try:
        head.save_pretrained(staging)
        tensors, optimizer_json = _optimizer_to_files(optimizer.state_dict())
        with atomic_path(staging / _OPTIMIZER_FILE) as tmp:
            save_file(tensors, str(tmp))
        state = {**state, "format": _STATE_FORMAT, "optimizer": optimizer_json,
                 "scaler": scaler.state_dict() if scaler is not None else None}
        atomic_write_json(staging / _STATE_FILE, state)
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_checkpoint(folder: Path) -> tuple[SparseHead, dict, dict]:
    """(head, optimizer state dict, run state) of a checkpoint folder; tensors read with safetensors only."""
    folder = _checkpoint_folder(folder)
    try:
        state = json.loads((folder / _STATE_FILE).read_text())
        tensors = load_file(str(folder / _OPTIMIZER_FILE))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"checkpoint {folder}: cannot read it ({error}); start a new run.") from None
    if state.get("format") != _STATE_FORMAT:
        raise ModelLoadError(f"checkpoint {folder} has format {state.get('format')!r};"
                             f" this mlsr reads {_STATE_FORMAT}.")
    head = SparseHead.from_pretrained(folder)
    return head, _optimizer_from_files(tensors, state["optimizer"]), state


def _checkpoint_folder(folder: Path) -> Path:
    """The checkpoint folder, or the previous one when a crash hit between the two renames of a save."""
    folder = Path(folder)
    if (folder / _STATE_FILE).is_file():
        return folder
    old = sorted(folder.parent.glob(f".{folder.name}.old-*"))
    if old and (old[-1] / _STATE_FILE).is_file():
        return old[-1]
    raise InputError(f"no training checkpoint in {folder}; start a new run (without resume=True).")


def _optimizer_to_files(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into named tensors and a JSON-able rest."""
    tensors, scalars = {}, {}
    for param_id, values in state_dict["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], saved: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *saved["scalars"].items()]:
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group
              for group in saved["param_groups"]]
    return {"state": state, "param_groups": groups}
