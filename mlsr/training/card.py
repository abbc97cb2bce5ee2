"""The model card (README.md) of a trained head folder, filled in from `card.md` after every epoch."""

from __future__ import annotations

from pathlib import Path
from string import Template

from mlsr.training.config import TrainConfig

_TEMPLATE = Template((Path(__file__).with_name("card.md")).read_text(encoding="utf-8"))
_COLUMNS = ("R@1", "R@5", "R@10", "MRR@10")
_MASKS = {"reference": "a masked caption keeps its tokens with `[CLS]` and `[SEP]`, up to 512, as the published"
                      " train.py (at search time the mask has no special tokens).",
         "retrieval": "a masked caption keeps the word pieces of its raw text, punctuation included, without"
                      " `[CLS]`/`[SEP]`: the mask used at search time (the published train.py also keeps them)."}
_VALIDATIONS = {"reference": "each batch of validation captions masked with the epoch's mask ratio, as the published"
                            " train.py validates",
               "expanded": "on fully expanded caption vectors (as searched with `--mode expand`; the published"
                           " train.py validates with the epoch's mask ratio)"}


def model_card(run: dict, history: list[dict], best_epoch: int, config: TrainConfig, name: str) -> str:
    """A short README.md for the head folder: data, backbone, settings, validation numbers, usage."""
    data = run["data"]
    backbone = data.get("backbone") or {}
    backbone_line = (f"`{backbone.get('id')}` ({backbone.get('model_type')}, revision {backbone.get('revision')},"
                     f" weights fingerprint {backbone.get('fingerprint')})" if backbone
                     else "not recorded in the dataset (for lsr42 datasets: the model named in the dataset id)")
    rows = []
    for row in history:
        if row["epoch"] in (0, best_epoch, history[-1]["epoch"]):
            label = {0: "0 (untrained)", best_epoch: f"{best_epoch} (best)"}.get(row["epoch"], str(row["epoch"]))
            metrics = " | ".join(f"{row[f'val_{column}']:.4f}" for column in _COLUMNS)
            rows.append(f"| {label} | {metrics} | {row['val_query_terms']:.1f} | {row['val_image_terms']:.1f} |")
    settings = ", ".join(f"{key} {'1 -> 0 schedule' if value is None else value}"
                         for key, value in run["config"].items())
    return _TEMPLATE.substitute(
        name=name, dense_size=data["dense_size"], tokenizer=run["tokenizer"], source=data["source"],
        revision=data["revision"], train_pairs=f"{data['train_pairs']:,}", val_captions=f"{data['val_captions']:,}",
        val_images=f"{data['val_images']:,}", backbone_line=backbone_line,
        init=f"LayerNorm and vocabulary projector from `{run['mlm']}`" if run["mlm"] else "random (no masked-LM)",
        settings=settings, epochs_done=history[-1]["epoch"], epochs=config.epochs, rows="\n".join(rows),
        masks=_MASKS[config.mask_tokens], validation=_VALIDATIONS[config.validation],
        backbone=backbone.get("id", "BACKBONE"),
    )
