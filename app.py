"""mlsr demo: image suggestions with highlighted terms. `python app.py --help` for the options.

Wiring only: parse the configuration, load the models and the index once, build the UI, launch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlsr.cli.args import add_backend_arguments, add_model_arguments, env
from mlsr.settings import DEFAULT_INDEX

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags override MLSR_* environment variables, which override the defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=env("INDEX", DEFAULT_INDEX),
                        help="index folder, or a Hub dataset id OWNER/NAME[@REVISION] made by push-index"
                             " (env MLSR_INDEX; default %(default)s)")
    parser.add_argument("--host", default=env("HOST", "127.0.0.1", also="GRADIO_SERVER_NAME"),
                        help="address to listen on (env MLSR_HOST or GRADIO_SERVER_NAME; default %(default)s)")
    parser.add_argument("--port", type=int, default=int(env("PORT", "7860", also="GRADIO_SERVER_PORT")),
                        help="port (env MLSR_PORT or GRADIO_SERVER_PORT; default %(default)s)")
    parser.add_argument("--share", action="store_true", default=env("SHARE") == "1",
                        help="also serve through a temporary public gradio.live link (env MLSR_SHARE=1)")
    parser.add_argument("--concurrency", type=int, default=int(env("CONCURRENCY", "2")),
                        help="requests that run model code at once (env MLSR_CONCURRENCY; default %(default)s)")
    parser.add_argument("--dataset", default=env("DATASET"),
                        help="published dense dataset (Hub id or folder) that builds a missing --index on first start"
                             " (env MLSR_DATASET; default: lsr42/mscoco-blip-dense for the default index only)")
    parser.add_argument("--mcp", action="store_true", default=env("MCP") == "1",
                        help="also serve the API endpoints as MCP tools for agents, at /gradio_api/mcp/ (streamable"
                             " HTTP; env MLSR_MCP=1)")
    parser.add_argument("--text-int8", action="store_true", default=env("TEXT_INT8") == "1",
                        help="encode text with the 8-bit text encoder (faster on CPU; see docs/performance.md for its"
                             " agreement with float32; env MLSR_TEXT_INT8=1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    add_model_arguments(parser)
    add_backend_arguments(parser)  # --backend milvus --milvus-uri URI: search a collection made by `export`
    return parser.parse_args(argv)


def create_app(args: argparse.Namespace):
    """The Blocks to serve, or a page that says why the app cannot start."""
    from mlsr.serving.service import Service
    from mlsr.app.startup import missing_index_hint, public_text, start_index, startup_guide
    from mlsr.app.ui import build_ui, error_page
    from mlsr.errors import IndexFormatError, IndexMismatchError, MlsrError
    from mlsr.allocator import return_large_blocks
    from mlsr.threads import apply_threads

    try:
        apply_threads(args.concurrency)  # torch, numba, FAISS and search threads: cores // concurrency (MLSR_THREADS)
        return_large_blocks()  # freed large arrays go back to the system (mlsr.allocator)
        index = start_index(args.index, args.dataset, head=args.head, tokenizer=args.tokenizer, device=args.device)
        service = Service.load(index, backbone=args.backbone, head=args.head, tokenizer=args.tokenizer,
                               device=args.device, backend=args.backend, milvus_uri=args.milvus_uri,
                               collection=args.collection, text_int8=args.text_int8)
    except MlsrError as error:
        message = f"{error}{missing_index_hint(args.index, args.dataset)}"
        print(f"mlsr: cannot start: {message}", file=sys.stderr)  # the operator's console: the full paths
        local = [args.index, args.backbone, args.head, args.tokenizer]
        broken = isinstance(error, IndexFormatError) and not isinstance(error, IndexMismatchError)
        guide = startup_guide(args.index, backbone=args.backbone, head=args.head, tokenizer=args.tokenizer,
                              broken_index=broken and Path(args.index).is_dir())
        return error_page(public_text(message, local), public_text(guide, local))
    return build_ui(service, examples_dir=ASSETS / "examples", images_dir=ASSETS / "images",
                    placeholder=ASSETS / "missing.png")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    from mlsr.app.ui import CSS, THEME
    from mlsr.progress import quiet_transformers

    quiet_transformers(args.verbose)
    demo = create_app(args)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=128)
    # Only the assets folder is served as files: gallery images are sent as thumbnails made by the app.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS, theme=THEME,
                allowed_paths=[str(ASSETS)], max_file_size="20mb", footer_links=["api"], mcp_server=args.mcp)


if __name__ == "__main__":
    main()
