"""How long a wiki gallery of N files (default 1,000) takes to gather, on the loopback MediaWiki server of the tests:
listing (500 per answer, continuation), image information (50 titles per request, one request at a time) and one
thumbnail per file (PICTURE_WORKERS at once), with a latency per request to stand in for the network. Encoding is
left out (it is the encoder's speed, as for any folder: see bench_core). Prints seconds per step and the floor the
API's etiquette sets (requests one after the other) as the baseline the measured time is compared with.

    python -m bench.bench_commons [--files 1000] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mlsr.ingest.commons import PICTURE_WORKERS, WikiReport, WikiSelection, fetch_files, gather_files
from mlsr.ingest.mediawiki import LIST_LIMIT, TITLES_PER_REQUEST, MediaWikiApi
from tests.helpers.data import make_image
from tests.helpers.mediawiki import file_page, mediawiki, record_wiki


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds slept before each API answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        titles = [f"File:Bench {n:05d}.jpg" for n in range(args.files)]
        pages = [file_page(t, meta={"LicenseShortName": "CC BY 4.0", "Artist": f"<a href='x'>Author {n}</a>",
                                    "LicenseUrl": "https://creativecommons.org/licenses/by/4.0",
                                    "ImageDescription": f"Picture number {n}"}) for n, t in enumerate(titles)]
        record_wiki(folder / "wiki", {"Category:Bench": titles}, pages, page_size=LIST_LIMIT)
        buffer = io.BytesIO()
        make_image(1, (500, 375)).save(buffer, format="JPEG", quality=85)
        images = {unquote(urlsplit(p["imageinfo"][0]["thumburl"].replace("{HOST}", "http://h")).path): buffer.getvalue()
                  for p in pages}
        with mediawiki(folder / "wiki", images, delay=args.latency) as server:
            api = MediaWikiApi(server.url, "bench@example.org")
            report = WikiReport()
            started = time.perf_counter()
            files = gather_files(api, WikiSelection(categories=("Category:Bench",)), folder / "out", report)
            fetched, _ = fetch_files(files, folder / "out", api, report)
            total = time.perf_counter() - started
    requests = api.requests
    floor = requests * args.latency
    print(f"{args.files} files, {len(fetched)} with a thumbnail ({len(buffer.getvalue()):,} bytes each),"
          f" {args.latency * 1000:.0f} ms per API answer")
    print(f"API requests: {requests} (listing {-(-args.files // LIST_LIMIT)}, information"
          f" {-(-args.files // TITLES_PER_REQUEST)}), one at a time; most in flight at once: {server.most_in_flight}")
    for step, seconds in report.seconds.items():
        print(f"  {step:9s} {seconds:7.2f} s")
    print(f"total {total:.2f} s ({args.files / total:.0f} files/s); baseline: API requests one after the other"
          f" {floor:.2f} s -> measured / baseline {total / max(floor, 1e-9):.2f}x; thumbnails {PICTURE_WORKERS} at once")


if __name__ == "__main__":
    main()
