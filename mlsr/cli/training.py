"""Commands for training your own head: `encode-dense` (images + captions -> dense dataset) and `train`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlsr.cli.args import add_device_argument, add_overwrite_argument, env
from mlsr.progress import quiet_transformers
from mlsr.settings import DEFAULT_BACKBONE, DEFAULT_TOKENIZER
from mlsr.training.config import AMP_MODES, DEFAULT_MLM, LAST_BATCH, MASK_TOKENS, PRESETS, VALIDATION, TrainConfig


def add_commands(commands) -> None:
    encode = commands.add_parser(
        "encode-dense", help="embed images and their captions with a dense model, for training",
        description="Embed captioned images with a BLIP or CLIP model into a dense dataset (the layout of the"
                    " published lsr42 datasets): img_embs.parquet, text_embs.parquet, dataset_meta.json.")
    encode.add_argument("--backbone", default=env("BACKBONE", DEFAULT_BACKBONE),
                        help="BLIP retrieval or CLIP model, Hub id or folder (env MLSR_BACKBONE; default %(default)s)")
    encode.add_argument("--images", required=True, type=Path, help="folder of images (searched recursively)")
    encode.add_argument("--captions", required=True, type=Path,
                        help="CSV (file,caption[,split]) or JSONL; split is train/val/test/restval per image")
    encode.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    add_overwrite_argument(encode, "a dataset")
    encode.add_argument("--val-fraction", type=float,
                        help="without a split column: share of images drawn for validation (default 0.1)")
    encode.add_argument("--test-fraction", type=float, default=0.0, help="... and for test (default 0)")
    encode.add_argument("--seed", type=int, default=0, help="seed of that draw (default %(default)s)")
    encode.add_argument("--batch-size", type=int, default=32, help="images or captions per forward pass")
    add_device_argument(encode)
    encode.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping"
                                                              " it")
    encode.set_defaults(run=_encode_dense_command)

    defaults = TrainConfig()
    train = commands.add_parser(
        "train", help="train a sparse head on a dense dataset",
        description="Train a dense-to-sparse head by distillation from a dense model's scores (ECIR 2024 recipe).")
    train.add_argument("--data", required=True, help="dense dataset: folder or Hub dataset id (e.g."
                                                     " lsr42/mscoco-blip-dense)")
    train.add_argument("--out", required=True, type=Path, help="folder for the head, its tokenizer, logs and"
                                                               " checkpoint")
    train.add_argument("--tokenizer", help="vocabulary of the head, Hub id or folder (default: the --mlm model's,"
                                           f" else {DEFAULT_TOKENIZER})")
    train.add_argument("--mlm", default=DEFAULT_MLM,
                       help="masked-LM whose LayerNorm + vocabulary projector initialise the head, Hub id or folder"
                            " (DistilBERT or BERT; default %(default)s, as the paper); 'none': random weights")
    train.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                       help="paper: the published recipe (200 epochs); cpu: 20 epochs with --amp bf16, for a CPU."
                            " Flags given override the preset (default %(default)s)")
    train.add_argument("--epochs", type=int, help=f"default {defaults.epochs} (--preset cpu: {PRESETS['cpu'].epochs})")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="pairs per batch (default"
                                                                                   " %(default)s)")
    train.add_argument("--q-reg", type=float, default=defaults.q_reg, help="L1 weight on captions (default"
                                                                           " %(default)s)")
    train.add_argument("--d-reg", type=float, default=defaults.d_reg, help="L1 weight on images (default %(default)s)")
    train.add_argument("--temperature", type=float, default=defaults.temperature,
                       help="of the dense teacher's softmax (default %(default)s)")
    train.add_argument("--lr", type=float, default=defaults.lr,
                       help="learning rate of LayerNorm + vocab projector (default %(default)s)")
    train.add_argument("--proj-lr", type=float, default=defaults.proj_lr,
                       help="learning rate of the dense -> hidden projection (default %(default)s)")
    train.add_argument("--warmup", type=float, default=defaults.warmup,
                       help="share of steps for L1 and learning-rate warm-up (default %(default)s)")
    train.add_argument("--mask-ratio", type=float,
                       help="fixed probability of masking a batch's captions to their tokens (default: 1 -> 0"
                            " schedule)")
    train.add_argument("--hidden-size", type=int, default=defaults.hidden_size,
                       help="hidden size of a randomly initialised head (default %(default)s)")
    train.add_argument("--train-splits", default=",".join(defaults.train_splits),
                       help="comma-separated splits to train on (default %(default)s)")
    train.add_argument("--val-split", default=defaults.val_split, help="split to validate on (default %(default)s)")
    train.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    train.add_argument("--amp", choices=AMP_MODES,
                       help=f"mixed precision (fp16: CUDA only; default {defaults.amp},"
                            f" --preset cpu: {PRESETS['cpu'].amp})")
    train.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size, help="default %(default)s")
    train.add_argument("--mask-tokens", choices=MASK_TOKENS, default=defaults.mask_tokens,
                       help="a masked caption's tokens: reference = [CLS]/[SEP] kept, up to 512 (train.py); retrieval ="
                            " the raw text's word pieces, up to 128, as mlsr searches (default %(default)s)")
    train.add_argument("--last-batch", choices=LAST_BATCH, default=defaults.last_batch,
                       help="an epoch's partial last batch: keep (a step, as the reference) or drop (default"
                            " %(default)s)")
    train.add_argument("--validation", choices=VALIDATION, default=defaults.validation,
                       help="validation captions: reference = masked with the epoch's mask ratio (train.py); expanded ="
                            " fully expanded, as at search time (default %(default)s)")
    add_device_argument(train)
    train.add_argument("--resume", action="store_true", help="continue the run in --out after its last finished epoch")
    train.set_defaults(run=_train_command)


def _encode_dense_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mlsr.data.captions import find_images, read_captions
    from mlsr.ingest.encode_dense import check_new_dataset, encode_dense
    from mlsr.models import default_device
    from mlsr.models.backbone import load_backbone

    check_new_dataset(args.out, args.overwrite, "--overwrite")  # before anything loads
    captions = read_captions(args.captions)
    total = len(find_images(args.images)) + sum(len(group) for group in captions.values())
    quiet_transformers(args.verbose)
    backbone = load_backbone(args.backbone, device=args.device or default_device())
    with tqdm(total=total, unit="item", desc="embedding images and captions") as bar:
        report = encode_dense(backbone, args.images, args.captions, args.out, val_fraction=args.val_fraction,
                              test_fraction=args.test_fraction, seed=args.seed, batch_size=args.batch_size,
                              strict=args.strict, progress=bar.update, overwrite=args.overwrite,
                              how="--overwrite")
    splits = ", ".join(f"{split} {count}" for split, count in sorted(report.splits.items()))
    print(f"wrote {report.images} images and {report.captions} captions ({backbone.dense_size}-d, {splits}) to"
          f" {args.out} in {report.seconds:.1f} s"
          + (f"; reused {report.reused_chunks} finished chunks" if report.reused_chunks else ""))
    for what, names in (("unreadable images skipped", [n for n, _ in report.skipped]),
                        ("images without a caption left out", report.uncaptioned),
                        ("captions naming no image under --images", report.unmatched)):
        if names:
            print(f"{len(names)} {what}: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}", file=sys.stderr)
    return 0


def _train_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from mlsr.training.loop import train

    preset = PRESETS[args.preset]
    config = TrainConfig(
        epochs=preset.epochs if args.epochs is None else args.epochs, batch_size=args.batch_size,
        q_reg=args.q_reg, d_reg=args.d_reg,
        temperature=args.temperature, lr=args.lr, proj_lr=args.proj_lr, warmup=args.warmup,
        mask_ratio=args.mask_ratio, hidden_size=args.hidden_size,
        train_splits=tuple(split.strip() for split in args.train_splits.split(",") if split.strip()),
        val_split=args.val_split, seed=args.seed, amp=preset.amp if args.amp is None else args.amp,
        eval_batch_size=args.eval_batch_size, mask_tokens=args.mask_tokens, last_batch=args.last_batch,
        validation=args.validation,
    )
    mlm = None if args.mlm.strip().lower() == "none" else args.mlm
    quiet_transformers(args.verbose)
    logging.getLogger("mlsr.training.loop").setLevel(logging.INFO)  # epoch lines reach the console
    bar = None

    def progress(step: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=step - 1, unit="batch", desc="training")
        bar.update(1)

    try:
        with logging_redirect_tqdm():
            result = train(args.data, args.out, config, tokenizer=args.tokenizer, mlm=mlm, device=args.device,
                           resume=args.resume, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    best = result.best
    print(f"best epoch {result.best_epoch}: R@1 {best['R@1']:.4f}, R@5 {best['R@5']:.4f}, R@10 {best['R@10']:.4f},"
          f" MRR@10 {best['MRR@10']:.4f}, {best['query_terms']:.0f} caption / {best['image_terms']:.0f} image terms;"
          f" head saved to {result.out} (log: {result.out / 'train_log.jsonl'})")
    return 0
