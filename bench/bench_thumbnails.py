"""Pictures inside the index: thumbnail size and build time per 1,000 items, and the build-time fetch rate.

    python -m bench.bench_thumbnails [--items 1000] [--fetch 200] [--latency-ms 50] [--out FILE]

1. Encoding: the sample COCO photos (assets/images) made into 512-px thumbnails, in the format mlsr keeps (WebP
   q75, method 2) and the alternatives (WebP q80 method 4, progressive JPEG q82): bytes per item and seconds per
   1,000 items, from an image already opened for encoding (what build-index does) and from the file (a second
   decode, what it avoids).
2. Fetching: `collect_pictures` over a loopback stand-in of the COCO host that answers after `--latency-ms`
   (a round trip to a far host), with mlsr's 8 workers against one at a time, measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "assets" / "images").glob("*.jpg"))
FORMATS = {"webp q75 m2 (mlsr)": ("WEBP", {"quality": 75, "method": 2}),
           "webp q80 m4": ("WEBP", {"quality": 80, "method": 4}),
           "jpeg q82 progressive": ("JPEG", {"quality": 82, "optimize": True, "progressive": True})}


def encoded(image: Image.Image, kind: str, options: dict) -> bytes:
    from mlsr.index.thumbnails import THUMBNAIL_SIDE

    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, kind, **options)
    return buffer.getvalue()


def encoding(items: int) -> dict:
    """Bytes per item and seconds per 1,000 items of each format, over `items` thumbnails of the sample photos."""
    from mlsr.images import load_image
    from mlsr.index.thumbnails import make_thumbnail, thumbnail_of

    opened = [load_image(photo) for photo in PHOTOS]
    rows = {}
    for name, (kind, options) in FORMATS.items():
        started = time.perf_counter()
        sizes = [len(encoded(opened[i % len(opened)], kind, options)) for i in range(items)]
        rows[name] = {"bytes_per_item": round(sum(sizes) / items), "s_per_1000": round(
            (time.perf_counter() - started) / items * 1000, 2)}
    started = time.perf_counter()
    assert len(make_thumbnail(opened[0])) > 0
    for i in range(items):
        make_thumbnail(opened[i % len(opened)])
    from_opened = (time.perf_counter() - started) / items * 1000
    started = time.perf_counter()
    for i in range(items):
        thumbnail_of(PHOTOS[i % len(PHOTOS)])
    from_file = (time.perf_counter() - started) / items * 1000
    return {"formats": rows, "s_per_1000_from_opened_image": round(from_opened, 2),
            "s_per_1000_from_file": round(from_file, 2)}


def fetching(count: int, latency_ms: float) -> dict:
    """Pictures per second through a loopback COCO host with `latency_ms` per answer: 8 workers against 1."""
    import os

    from mlsr.ingest.pictures import FETCH_WORKERS, collect_pictures
    from tests.helpers.loopback import AnyCocoPhoto, coco_proxy

    urls = [f"http://images.cocodataset.org/val2014/COCO_val2014_{i:012d}.jpg" for i in range(count)]
    ids = [str(i) for i in range(count)]
    rates = {}
    with coco_proxy(AnyCocoPhoto(PHOTOS), delay=latency_ms / 1000) as proxy:
        os.environ.update(proxy.env())
        for workers in (1, FETCH_WORKERS):
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                thumbnails, report = collect_pictures(ids, urls, Path(folder) / "index", workers=workers)
                seconds = time.perf_counter() - started
            assert thumbnails.count == count and not report.failed, report.failed[:3]
            rates[workers] = round(count / seconds, 1)
    return {"pictures": count, "latency_ms": latency_ms, "per_second": {str(w): r for w, r in rates.items()},
            "speedup": round(rates[FETCH_WORKERS] / rates[1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="thumbnails encoded per format")
    parser.add_argument("--fetch", type=int, default=200, help="pictures fetched per run")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the stand-in host's delay per answer")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args()
    result = {"machine": platform.processor() or platform.machine(), "encoding": encoding(args.items),
              "fetching": fetching(args.fetch, args.latency_ms)}
    for name, row in result["encoding"]["formats"].items():
        print(f"{name:24s} {row['bytes_per_item'] / 1024:6.1f} KB/item  {row['s_per_1000']:6.2f} s per 1,000 items")
    enc = result["encoding"]
    print(f"mlsr's thumbnail from the opened image: {enc['s_per_1000_from_opened_image']:.2f} s per 1,000 items;"
          f" from the file (a second decode): {enc['s_per_1000_from_file']:.2f} s")
    fetch = result["fetching"]
    print(f"fetch at {fetch['latency_ms']:.0f} ms per answer: {fetch['per_second']['1']}/s one at a time,"
          f" {fetch['per_second'][str(max(map(int, fetch['per_second'])))]}/s with mlsr's workers"
          f" ({fetch['speedup']}x)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
