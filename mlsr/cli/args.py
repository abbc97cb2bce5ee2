"""Arguments shared by several commands and by `app.py`: models, search backend, and their MLSR_* defaults.

A flag overrides its MLSR_* environment variable, which overrides the built-in default.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import overload

from mlsr.backends import BACKENDS
from mlsr.settings import DEFAULT_BACKBONE, DEFAULT_HEAD, DEFAULT_TOKENIZER


@overload
def env(name: str, default: str, *, also: str | None = None) -> str: ...


@overload
def env(name: str, default: None = None, *, also: str | None = None) -> str | None: ...


def env(name: str, default: str | None = None, *, also: str | None = None) -> str | None:
    """The value of environment variable MLSR_<name> (else of `also`, e.g. GRADIO_SERVER_PORT), else `default`.

    An empty variable counts as unset.
    """
    return os.environ.get(f"MLSR_{name}") or (os.environ.get(also) if also else None) or default


def add_model_arguments(parser: argparse.ArgumentParser, backbone: bool = True, from_index: bool = False) -> None:
    """--backbone/--head/--tokenizer/--device (and --batch-size), each model a Hub id or a folder.

    `backbone=False` leaves out what only encoding images or text needs; `from_index` leaves the models
    unset (None) by default, for a command that takes them from the index it changes.
    """
    group = parser.add_argument_group("models (Hub repo id or local folder)")

    def model(flag: str, name: str, default: str, what: str) -> None:
        shown = f"the index's own, else env MLSR_{name} or {default}" if from_index else "%(default)s"
        group.add_argument(flag, default=None if from_index else env(name, default),
                           help=f"{what} (env MLSR_{name}; default {shown})" if not from_index
                           else f"{what} (default: {shown})")

    if backbone:
        model("--backbone", "BACKBONE", DEFAULT_BACKBONE, "BLIP retrieval or CLIP model")
    model("--head", "HEAD", DEFAULT_HEAD, "D2S sparse head")
    model("--tokenizer", "TOKENIZER", DEFAULT_TOKENIZER, "tokenizer of the head's vocabulary")
    add_device_argument(group)
    if backbone:
        group.add_argument("--batch-size", type=int, default=16, help="images or text windows per forward pass")


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--overwrite: replace `what` ("an index", "a model") already at --out; without it, one there is refused."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {what} already at --out (without it, one there is refused and left as it is)")


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default=env("DEVICE"),
                        help="torch device, e.g. cpu or cuda (env MLSR_DEVICE; default: cuda when present)")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend/--milvus-uri/--collection (env MLSR_BACKEND, MLSR_MILVUS_URI, MLSR_MILVUS_COLLECTION)."""
    group = parser.add_argument_group("search backend")
    group.add_argument("--backend", choices=BACKENDS, default=env("BACKEND", "scipy"),
                       help="scipy: in-process exact search; milvus: a collection made by `export`"
                            " (env MLSR_BACKEND; default %(default)s)")
    add_milvus_arguments(group)


def add_milvus_arguments(parser, collection_default: str | None = None) -> None:
    parser.add_argument("--milvus-uri", default=env("MILVUS_URI"),
                        help="Milvus Lite file (path ending in .db) or cluster address http://host:19530"
                             " (env MLSR_MILVUS_URI)")
    parser.add_argument("--collection", default=env("MILVUS_COLLECTION", collection_default),
                        help="Milvus collection (env MLSR_MILVUS_COLLECTION; default mlsr)")


INDEX_HELP = "index folder, or a Hub dataset id OWNER/NAME[@REVISION] (downloaded once into the Hugging Face cache)"


def add_terms_argument(parser: argparse.ArgumentParser, default: int, help: str) -> None:
    """--top-k: how many terms to show (`k` is always the number of result rows); --terms is its old name."""
    parser.add_argument("--top-k", type=int, default=default, dest="top_k", help=f"{help} (default %(default)s)")
    parser.add_argument("--terms", type=int, dest="top_k", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


_MODEL_ROLES = {"backbone": ("BACKBONE", DEFAULT_BACKBONE), "head": ("HEAD", DEFAULT_HEAD),
               "tokenizer": ("TOKENIZER", DEFAULT_TOKENIZER)}


def models_from_index(args: argparse.Namespace, recorded, where: str) -> None:
    """Fill the model arguments left unset (None) with an index's own: a flag wins, then the model the index
    records (`recorded`, its ModelRecord or None), then MLSR_* or mlsr's default.

    A local folder is recorded by its name only: found in the working directory, else an InputError asks for
    the flag (a backbone or head on the Hub is an `owner/name` id; one without a slash is a folder's name).
    """
    from mlsr.errors import InputError

    for role, (name, default) in _MODEL_ROLES.items():
        if getattr(args, role, "") is not None:
            continue
        ref = getattr(recorded, role, None) if recorded is not None else None
        if ref is not None and ref.id and role != "tokenizer" and "/" not in ref.id and not Path(ref.id).exists():
            raise InputError(f"{where} was built with a local {role} folder named {ref.id!r} (indexes record local"
                             f" folders by name only): pass --{role} FOLDER; its weights are checked against the"
                             " ones the index records.")
        setattr(args, role, (ref.id if ref is not None and ref.id else None) or env(name, default))


def encoder_from_args(args: argparse.Namespace):
    """The Encoder named by the model arguments (transformers' own progress bars and notices kept quiet)."""
    from mlsr.progress import quiet_transformers
    from mlsr.models.encoder import Encoder

    quiet_transformers(getattr(args, "verbose", False))
    return Encoder.from_pretrained(args.backbone, args.head, args.tokenizer, device=args.device,
                                   batch_size=args.batch_size)


def head_encoder_from_args(args: argparse.Namespace):
    """The head-only Encoder (no backbone) named by the model arguments: for published dense vectors."""
    from mlsr.progress import quiet_transformers
    from mlsr.models.encoder import Encoder

    quiet_transformers(getattr(args, "verbose", False))
    return Encoder.head_only(args.head, args.tokenizer, device=args.device)
