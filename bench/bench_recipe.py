"""What each of mlsr's training choices changes against the published recipe, on one small planted dataset.

    python -m bench.bench_recipe [--epochs 20] [--out FILE]

The dataset is the training tests' planted one (tests/training/test_training.py: 8 topics, 128 training pairs,
a real BertTokenizer over 230 word pieces), with a random-initialised head; every run has the same seed.
Printed per setting: the loss of the first step on one fully masked batch, the steps of the run, and
validation R@1 / query terms after the last epoch (R@1 validated as each setting validates, and also fully
expanded, so the settings compare on one footing). The reference recipe is the default; each other row
changes one setting.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path


def first_masked_loss(data, tokenizer, config) -> float:
    """The loss of step 0 on the first batch, masked to its captions' tokens as `config` masks them."""
    import torch

    from mlsr.training.head_init import new_head
    from mlsr.training.loop import _Batches, build_optimizer, train_step

    head = new_head(data.dense_size, len(tokenizer), hidden_size=config.hidden_size, seed=config.seed)
    batches = _Batches.of(data, data.pairs(["train"]), tokenizer, config, "cpu")
    pick = torch.arange(batches.size)
    losses = train_step(head, build_optimizer(head, config), batches.texts[batches.text_rows[pick]],
                        batches.images[batches.image_rows[pick]], input_ids=batches.token_ids[pick],
                        attention_mask=batches.token_mask[pick], q_weight=0.0, d_weight=0.0,
                        temperature=config.temperature)
    return float(losses[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args()
    from transformers import BertTokenizer

    from mlsr.data.lsr42 import load_dense_dataset
    from mlsr.training.config import TrainConfig
    from mlsr.training.loop import train
    from mlsr.training.validation import validate
    from tests.training.test_training import FAST, WORDS, make_planted_data

    base = TrainConfig(epochs=args.epochs, **{**FAST, "batch_size": 30})  # 128 pairs: 4 full batches and 1 of 8
    settings = {"reference (default)": base, "mask_tokens=retrieval": replace(base, mask_tokens="retrieval"),
                "last_batch=drop": replace(base, last_batch="drop"), "validation=expanded": replace(base, validation="expanded")}
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)}).save_pretrained(root / "tokenizer")
        tokenizer = BertTokenizer.from_pretrained(root / "tokenizer")
        data = load_dense_dataset(make_planted_data(root / "data"))
        for name, config in settings.items():
            steps = []
            result = train(data, root / name, config, tokenizer=str(root / "tokenizer"), mlm=None, device="cpu",
                           progress=lambda step, total: steps.append(total))
            from mlsr.models.head import SparseHead

            expanded = validate(SparseHead.from_pretrained(root / name), data, data.pairs(["val"]))
            last = result.history[-1]
            rows[name] = {"step0_masked_loss": round(first_masked_loss(data, tokenizer, config), 4),
                          "steps": steps[-1], "best_epoch": result.best_epoch,
                          "val_R@1_as_validated": round(last["val_R@1"], 4),
                          "best_head_R@1_expanded": round(expanded["R@1"], 4),
                          "query_terms": round(expanded["query_terms"], 1)}
    for name, row in rows.items():
        print(f"{name:22s} " + "  ".join(f"{key} {value}" for key, value in row.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
