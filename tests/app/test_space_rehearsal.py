"""A Space rehearsal, offline and on loopback only: the README's first command as a Hugging Face Space runs it.

A loopback Hub (olah, `tests/helpers/loopback.py`) serves tiny models and a small dataset in the published lsr42
layout under the *real* repo ids the app defaults to, through HF_ENDPOINT, so huggingface_hub's own download,
cache and revision code runs unchanged; the COCO image host is a loopback proxy (HTTP_PROXY, the session's
`coco_host`); nginx plays Spaces' HTTPS proxy; Chromium resolves no host but the loopback. Then:
`python app.py` with no model or index flags and a fresh HF_HOME builds its gallery, and its page over HTTPS shows
every result's picture with no request to any other host and no mixed content; the second start reuses the cache
and the gallery; `--index OWNER/NAME`, `prepare` and `verify` go through the same Hub. Timings are printed and
saved in tests/artifacts/space-rehearsal.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from mlsr.evaluation.verify import EXAMPLE_TERMS
from mlsr.index.sparse import SparseIndex
from mlsr.settings import DEFAULT_BACKBONE, DEFAULT_DATASET, DEFAULT_HEAD, DEFAULT_INDEX, DEFAULT_TOKENIZER
from tests.helpers.app import start_app
from tests.helpers.data import REAL_IMAGES, ROOT
from tests.helpers.datasets import EXAMPLE_FILE, write_verify_dataset
from tests.helpers.loopback import CHROMIUM, OFFLINE_CHROMIUM_ARGS, loopback_hub, tls_front
from tests.helpers.models import save_example_head

GALLERY_REPO = "mlsr-tests/coco-gallery"  # an index published with push-index, for `--index OWNER/NAME`
PASSAGE = "A boy leads water buffalo through the market; a woman cuts a cake."
ARTIFACTS = ROOT / "tests" / "artifacts"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def published(encoder, tmp_path_factory) -> Path:
    """lsr42/mscoco-blip-dense in its published layout, made by the tiny backbone (so `verify` can pass), every
    image with a COCO file name (the proxy answers each with a sample photo)."""
    folder = write_verify_dataset(tmp_path_factory.mktemp("published") / "mscoco-blip-dense", encoder)
    meta = json.loads((folder / "dataset_meta.json").read_text())
    for number, image in enumerate(meta["images"]):
        if not image["filename"].startswith("COCO_"):
            image["filename"] = f"COCO_val2014_{900000 + number:012d}.jpg"
    (folder / "dataset_meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def example_head(encoder, tokenizer_dir, tmp_path_factory) -> Path:
    """Stands in for the published head: image id 2 decodes to the reference README's terms."""
    vector = encoder.encode_images_with_dense([REAL_IMAGES / EXAMPLE_FILE])[1][0]
    return save_example_head(tmp_path_factory.mktemp("example-head"), vector, EXAMPLE_TERMS, tokenizer_dir)


@pytest.fixture(scope="module")
def gallery(published, example_head, tokenizer_dir, tmp_path_factory) -> Path:
    """An index of the published vectors, as `push-index` would publish it (pictures inside)."""
    from mlsr.ingest.published import import_dense
    from mlsr.models.encoder import Encoder

    folder = tmp_path_factory.mktemp("gallery") / "coco-gallery"
    import_dense(Encoder.head_only(str(example_head), str(tokenizer_dir), device="cpu"), published, folder)
    return folder


@pytest.fixture(scope="module")
def hub(backbone_dir, example_head, tokenizer_dir, published, gallery, tmp_path_factory):
    repos = {("model", DEFAULT_BACKBONE): backbone_dir, ("model", DEFAULT_HEAD): example_head,
             ("model", DEFAULT_TOKENIZER): tokenizer_dir, ("dataset", DEFAULT_DATASET): published,
             ("dataset", GALLERY_REPO): gallery}
    with loopback_hub(repos, tmp_path_factory.mktemp("hub")) as running:
        yield running


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    """The Space's working folder: where `index/mscoco-test` is built (app.py itself runs from the checkout)."""
    return tmp_path_factory.mktemp("space")


def space_env(hub, hf_home: Path) -> dict[str, str]:
    return {**hub.env(hf_home), "GRADIO_ANALYTICS_ENABLED": "False"}


def port_of(url: str) -> int:
    return urllib.parse.urlsplit(url).port


def blobs(hf_home: Path) -> set[str]:
    return {str(path.relative_to(hf_home)) for path in (hf_home / "hub").rglob("blobs/*")}


def browse_over_https(app_url: str, workdir: Path, shot: str) -> dict:
    """Open the app through the TLS front in Chromium that resolves only the loopback; suggest; what the page did."""
    with tls_front(port_of(app_url), workdir) as https_url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=[*OFFLINE_CHROMIUM_ARGS, "--no-proxy-server"])
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.set_default_timeout(60_000)
            requested, console = [], []
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.goto(https_url, wait_until="load")
            page.locator("#article-text textarea").fill(PASSAGE)
            page.locator("#suggest-button").click()
            expect(page.locator("#suggest-timing")).to_contain_text("images")
            images = page.locator("#results-gallery img")
            expect(images.first).to_be_visible()
            page.wait_for_function("() => [...document.querySelectorAll('#results-gallery img')]"
                                   ".every(image => image.complete)")
            shown = images.evaluate_all("images => images.map(i => [i.naturalWidth, i.currentSrc])")
            page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
        finally:
            browser.close()
    return {"origin": https_url.rstrip("/"), "shown": shown, "requested": requested, "console": console}


def check_page(seen: dict, expected: int) -> None:
    """Every thumbnail loaded, from the app's own origin; no other host asked; no mixed content."""
    assert len(seen["shown"]) == expected
    assert all(width > 0 for width, _ in seen["shown"]), seen["shown"]
    assert all(src.startswith(seen["origin"] + "/") for _, src in seen["shown"]), seen["shown"]
    elsewhere = [url for url in seen["requested"] if not url.startswith((seen["origin"] + "/", "data:", "blob:"))]
    assert elsewhere == [], elsewhere
    assert not [line for line in seen["console"] if "Mixed Content" in line], seen["console"]


def test_the_first_command_runs_as_a_space_over_https(hub, space, coco_host, tmp_path):
    """`python app.py` with no flags and an empty cache: models and dataset from the Hub, the gallery built with
    its pictures fetched once by the server, and a visitor's browser shows every one over HTTPS."""
    ARTIFACTS.mkdir(exist_ok=True)
    hf_home = space / "hf-home"
    fetched = len(coco_host.requested())
    started = time.perf_counter()
    process, url = start_app([], tmp_path / "first.log", cwd=space, env=space_env(hub, hf_home), timeout=300)
    TIMINGS["first_start_s"] = round(time.perf_counter() - started, 2)
    try:
        assert (space / DEFAULT_INDEX / "manifest.json").is_file()
        pictures = coco_host.requested()[fetched:]
        assert len(pictures) == 6 and all(u.startswith("http://images.cocodataset.org/val2014/") for u in pictures)
        seen = browse_over_https(url, tmp_path / "tls", "space-https.png")
        check_page(seen, expected=6)  # 6 images in the gallery, k = 12
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "first.log").read_text()

    downloaded, fetched = blobs(hf_home), len(coco_host.requested())
    started = time.perf_counter()
    process, url = start_app([], tmp_path / "second.log", cwd=space, env=space_env(hub, hf_home), timeout=300)
    TIMINGS["second_start_s"] = round(time.perf_counter() - started, 2)
    process.terminate()
    process.wait(timeout=30)
    assert blobs(hf_home) == downloaded and len(coco_host.requested()) == fetched  # nothing downloaded again
    assert "first start: building" not in (tmp_path / "second.log").read_text()
    _save_timings()


def test_a_local_photo_gallery_over_https(app_args, app_index, tmp_path):
    """A gallery of local photos (their pictures are the index's thumbnails) shows every one over HTTPS too."""
    process, url = start_app(app_args, tmp_path / "local.log")
    try:
        seen = browse_over_https(url, tmp_path / "tls", "local-https.png")
    finally:
        process.terminate()
        process.wait(timeout=30)
    check_page(seen, expected=len(SparseIndex.load(app_index)))  # k = 12: every photo of the gallery


def test_a_published_index_prepare_and_verify_through_the_loopback_hub(hub, space, tmp_path):
    """`--index OWNER/NAME` serves the published index's own pictures to API clients; `prepare` and `verify`
    read the same Hub."""
    from gradio_client import Client

    env = space_env(hub, tmp_path / "hf-home")
    started = time.perf_counter()
    process, url = start_app(["--index", GALLERY_REPO], tmp_path / "hub-index.log", cwd=space, env=env, timeout=300)
    TIMINGS["hub_index_start_s"] = round(time.perf_counter() - started, 2)
    try:
        found = Client(url, verbose=False).predict(PASSAGE, 6, "expand", api_name="/suggest")
        assert len(found["results"]) == 6
        for hit in found["results"]:
            assert hit["source"].startswith("http://images.cocodataset.org/")  # a link to the original...
            with urllib.request.urlopen(urllib.parse.urljoin(url, hit["image"]), timeout=30) as answer:
                assert answer.headers["Content-Type"] == "image/webp"  # ...and the picture, from the app
    finally:
        process.terminate()
        process.wait(timeout=30)

    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    prepared = tmp_path / "prepared"
    done = subprocess.run([sys.executable, "-m", "mlsr", "prepare", "--index", str(prepared), "--device", "cpu"],
                          cwd=space, env=full_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((prepared / "manifest.json").read_text())["thumbnails"] == 6
    verified = subprocess.run([sys.executable, "-m", "mlsr", "verify", "--only", "text,image,example", "--device", "cpu"],
                              cwd=space, env=full_env, capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]
    assert verified.stdout.count("PASS") >= 3
    _save_timings()


def _save_timings() -> None:
    """Print the timings and keep them in tests/artifacts/space-rehearsal.json (each test adds its own)."""
    print(f"space rehearsal timings: {TIMINGS}")
    file = ARTIFACTS / "space-rehearsal.json"
    saved = json.loads(file.read_text()) if file.is_file() else {}
    file.write_text(json.dumps({**saved, **TIMINGS}, indent=2) + "\n")
