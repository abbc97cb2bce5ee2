"""sentence-transformers commands: `export-st` (the models as a SparseEncoder folder) and `push-st` (to the Hub)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlsr.cli.args import add_model_arguments, add_overwrite_argument, encoder_from_args
from mlsr.settings import ENCODE_MODES


def add_commands(commands) -> None:
    export = commands.add_parser(
        "export-st", help="write the models as a sentence-transformers SparseEncoder folder (text and images)",
        description="Write the backbone, head and term tokenizer as a sentence-transformers SparseEncoder folder"
                    " (modules.json, config_sentence_transformers.json, one folder per module, a model card);"
                    " load it with mlsr.models.st.assemble.load_sparse_encoder(DIR) where mlsr[st] is installed.")
    export.add_argument("--out", required=True, type=Path, help="model folder to write (written atomically)")
    add_overwrite_argument(export, "a model")
    export.add_argument("--query-mode", choices=ENCODE_MODES, default="expand",
                        help="how encode_query encodes texts (default %(default)s)")
    export.add_argument("--document-mode", choices=ENCODE_MODES, default="no_expand",
                        help="how encode_document encodes texts, as mlsr's caption documents (default %(default)s);"
                             " images are always expanded")
    add_model_arguments(export)
    export.set_defaults(run=_export_st_command)

    push = commands.add_parser(
        "push-st", help="publish a folder written by export-st as a model repo on the Hugging Face Hub",
        description="Upload a folder written by export-st to a Hub model repo in one commit, with a model card that"
                    " loads it by REPO_ID.")
    push.add_argument("folder", type=Path, metavar="DIR", help="folder written by export-st")
    push.add_argument("repo_id", metavar="REPO_ID", help="model repo OWNER/NAME (created when missing)")
    push.add_argument("--private", action="store_true", help="make a new repo private")
    push.set_defaults(run=_push_st_command)


def _export_st_command(args: argparse.Namespace) -> int:
    from mlsr.models.st.assemble import check_export_target, export_sparse_encoder

    check_export_target(args.out, args.overwrite, "--overwrite")  # before the models load
    encoder = encoder_from_args(args)
    out = export_sparse_encoder(encoder, args.out, overwrite=args.overwrite, query_mode=args.query_mode,
                                document_mode=args.document_mode)
    print(f"wrote a sentence-transformers SparseEncoder to {out} (texts and images; queries {args.query_mode},"
          f" text documents {args.document_mode}); load it with load_sparse_encoder({str(out)!r})"
          " (mlsr.models.st.assemble)")
    return 0


def _push_st_command(args: argparse.Namespace) -> int:
    from mlsr.models.st.assemble import push_sparse_encoder

    url = push_sparse_encoder(args.folder, args.repo_id, private=args.private)
    print(f"pushed {args.folder} to {url}; load it with load_sparse_encoder({args.repo_id!r})"
          " (mlsr.models.st.assemble)")
    return 0
