"""Pictures fetched once at build time (import-dense, prepare): through the proxy variables, from the datasets' own
image host only, retried, bounded and checked like uploads, resumed after a SIGKILL; a picture that cannot be had
leaves a placeholder and a line saying why, never a failed build. Every fetch goes to a loopback proxy."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest

import mlsr.ingest.pictures as pictures
from mlsr._files import KILL_AT_ENV
from mlsr.cli import main
from mlsr.errors import InputError
from mlsr.index.sparse import SparseIndex
from mlsr.index.thumbnails import thumbnail_of
from mlsr.ingest.pictures import collect_pictures, fetch_picture, _fetchable
from mlsr.ingest.published import import_dense
from mlsr.models.encoder import Encoder
from tests.helpers.data import ROOT, make_image
from tests.helpers.datasets import write_dense_dataset
from tests.helpers.loopback import COCO_HOST, coco_proxy, free_port

ITEMS = 8  # test images kept in the dataset: one round of fetches (pictures.FETCH_WORKERS at once)


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory) -> Path:
    """The published layout with COCO file names, its test split cut to ITEMS images."""
    folder = write_dense_dataset(tmp_path_factory.mktemp("pictures") / "mscoco-blip-dense", "mscoco", seed=4)
    meta = json.loads((folder / "dataset_meta.json").read_text())
    for image in [image for image in meta["images"] if image["split"] == "test"][ITEMS:]:
        image["split"] = "val"
    (folder / "dataset_meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def urls(coco_dataset) -> list[str]:
    """The test items' picture URLs, in index order."""
    meta = json.loads((coco_dataset / "dataset_meta.json").read_text())
    return [f"http://{COCO_HOST}/{image['filepath']}/{image['filename']}" for image in meta["images"]
            if image["split"] == "test"]


@pytest.fixture(scope="module")
def photos(urls, tmp_path_factory) -> dict[str, Path]:
    """A distinct generated JPEG for each item's path on the COCO host (`val2014/COCO_val2014_....jpg`)."""
    folder = tmp_path_factory.mktemp("coco-photos")
    files = {}
    for k, url in enumerate(urls):
        files[path_of(url)] = folder / f"{k}.jpg"
        make_image(100 + k, (160, 120)).save(files[path_of(url)], quality=90)
    return files


@pytest.fixture(scope="module")
def head_encoder(head_dir, tokenizer_dir):
    return Encoder.head_only(str(head_dir), str(tokenizer_dir), device="cpu")


@pytest.fixture
def models(head_dir, tokenizer_dir) -> list[str]:
    return ["--head", str(head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu"]


def path_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def use_proxy(monkeypatch, url: str) -> None:
    """Send this test's plain-HTTP fetches (and its subprocesses') to `url` instead of the session's COCO proxy."""
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, url)


def printed_failures(err: str) -> dict[str, str]:
    """The `  id: reason` lines a command printed for items left without a picture."""
    return dict(re.findall(r"^  (\S+): (.*)$", err, re.M))


def test_import_fetches_each_picture_once_and_keeps_it(coco_dataset, urls, photos, head_encoder, tmp_path,
                                                       monkeypatch):
    """Every item's thumbnail is its own photo, fetched through the proxy: each URL asked once, nothing else; the
    pictures kept for a resume are gone once the index is saved."""
    with coco_proxy(photos) as proxy:
        use_proxy(monkeypatch, proxy.url)
        index, report = import_dense(head_encoder, coco_dataset, tmp_path / "gallery", split="test")
    assert sorted(proxy.requested()) == sorted(urls) and len(set(urls)) == ITEMS
    assert report.pictures_made == ITEMS and report.no_picture == []
    loaded = SparseIndex.load(tmp_path / "gallery")
    assert [item["image"] for item in loaded.items] == urls
    expected = [thumbnail_of(photos[path_of(url)]) for url in urls]
    assert len(set(expected)) == ITEMS  # distinct photos: a picture on the wrong row would show
    assert [loaded.picture(row) for row in range(ITEMS)] == expected == [index.picture(row) for row in range(ITEMS)]
    assert json.loads((tmp_path / "gallery" / "manifest.json").read_text())["thumbnails"] == ITEMS
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gallery"]  # no .gallery.pictures left


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A small, well-formed PNG that declares width x height pixels (one-bit grey): cheap to make, huge to decode."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_failed_pictures_leave_placeholders_and_one_line_each(coco_dataset, urls, photos, models, tmp_path,
                                                              monkeypatch, capsys):
    """503 twice (Retry-After: 0) is retried, without waiting, and fetched; a 404 (asked once), a non-image, an
    oversize body and a decompression bomb each leave their item without a picture, printed with the reason; the
    build succeeds."""
    flaky, missing, text, big, bomb = (path_of(url) for url in urls[:5])
    cap = 50_000
    served = dict(photos)
    del served[missing]
    (tmp_path / "page.jpg").write_bytes(b"<html><body>Not found, but 200</body></html>")
    photo = photos[big].read_bytes()
    assert len(photo) < cap
    (tmp_path / "big.jpg").write_bytes(photo + b"\0" * cap)
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    served.update({text: tmp_path / "page.jpg", big: tmp_path / "big.jpg", bomb: tmp_path / "bomb.png"})
    monkeypatch.setattr(pictures, "MAX_PICTURE_BYTES", cap)
    waits: list[float] = []  # the back-off sleeps of the fetches (pictures' own view of `time` only)
    monkeypatch.setattr(pictures, "time", SimpleNamespace(sleep=waits.append, perf_counter=time.perf_counter,
                                                         monotonic=time.monotonic))
    out = tmp_path / "gallery"
    with coco_proxy(served, flaky={flaky: 2}) as proxy:
        use_proxy(monkeypatch, proxy.url)
        code = main(["import-dense", "--dataset", str(coco_dataset), "--split", "test", "--out", str(out), *models])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    asked = proxy.requested()
    assert {url: asked.count(url) for url in urls} == {url: 3 if path_of(url) == flaky else 1 for url in urls}
    assert waits == [0.0, 0.0]  # Retry-After: 0 honoured, twice; nothing else waited for
    index = SparseIndex.load(out)
    ids = [item["id"] for item in index.items]
    assert [ids[row] for row in index.thumbnails.missing()] == ids[1:5]
    assert index.picture(0) == thumbnail_of(photos[flaky])
    failures = printed_failures(err)
    assert sorted(failures) == sorted(ids[1:5]) and "4 items show a placeholder" in err
    assert "HTTP 404" in failures[ids[1]]
    assert "not an image" in failures[ids[2]]
    assert f"more than the {cap:,} allowed" in failures[ids[3]]
    assert "decompression bomb" in failures[ids[4]] or "20000x20000" in failures[ids[4]]
    assert f"thumbnails: {ITEMS - 4} made" in err


OFF_HOST = ["http://example.org/x.jpg", f"http://{COCO_HOST}@example.org/x.jpg",
            f"http://{COCO_HOST}.example.org/x.jpg", f"http://example.org/{COCO_HOST}/x.jpg",
            f"ftp://{COCO_HOST}/val2014/x.jpg", "file:///etc/hostname", "http://127.0.0.1:9/x.jpg",
            f"{COCO_HOST}/val2014/x.jpg"]


@pytest.mark.parametrize("url", OFF_HOST)
def test_a_url_off_the_image_hosts_is_never_asked_for(url, urls, photos, tmp_path, monkeypatch):
    """An item edited to point elsewhere gets no picture, with the reason, and no request for it leaves the process;
    its neighbour on the COCO host is fetched as usual."""
    with coco_proxy(photos) as proxy:
        use_proxy(monkeypatch, proxy.url)
        assert not _fetchable(url)
        with pytest.raises(InputError):
            fetch_picture(url)
        found, report = collect_pictures(["coco", "edited"], [urls[0], url], tmp_path / "index")
    assert proxy.requested() == [urls[0]]
    assert found.picture(0) == thumbnail_of(photos[path_of(urls[0])]) and found.picture(1) is None
    assert [name for name, _ in report.failed] == ["edited"] and report.failed[0][1]


@contextmanager
def redirecting_proxy(photo: Path):
    """A proxy playing the COCO host: `/hop/<rest>` answers 302 to `http://<rest>`, any other path `photo`; other
    hosts 403. Yields the proxy's URL and the list of URLs asked for."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            asked.append(self.path)
            url = urlsplit(self.path)
            status, headers, body = 200, {"Content-Type": "image/jpeg"}, photo.read_bytes()
            if url.hostname != COCO_HOST:
                status, headers, body = 403, {}, b"not served here"
            elif url.path.startswith("/hop/"):
                status, headers, body = 302, {"Location": "http://" + url.path[len("/hop/"):]}, b""
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_redirect_is_followed_only_within_the_image_hosts(photos, urls, monkeypatch):
    photo = photos[path_of(urls[0])]
    inside = f"http://{COCO_HOST}/hop/{COCO_HOST}/val2014/there.jpg"
    with redirecting_proxy(photo) as (proxy, asked):
        use_proxy(monkeypatch, proxy)
        assert fetch_picture(inside) == thumbnail_of(photo)
        assert asked == [inside, f"http://{COCO_HOST}/val2014/there.jpg"]
        for target in ("example.org/x.jpg", "127.0.0.1:9/x.jpg", f"{COCO_HOST}.example.org/x.jpg"):
            asked.clear()
            away = f"http://{COCO_HOST}/hop/{target}"
            with pytest.raises(InputError, match="redirects to .* not a dataset image host"):
                fetch_picture(away)
            assert asked == [away], target


def run_import(args: list[str], proxy: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    """`python -m mlsr import-dense ARGS` in a subprocess using `proxy`; with `kill_at` it SIGKILLs itself there."""
    env = {**os.environ, "HTTP_PROXY": proxy, "http_proxy": proxy, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "mlsr", "import-dense", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_sigkill_while_fetching_resumes_without_fetching_kept_pictures_again(coco_dataset, urls, photos, models,
                                                                            head_encoder, tmp_path, monkeypatch):
    """Killed after the 3rd kept picture: no index (nor a half one) at --out, three pictures kept; a re-run fetches
    only the others and writes the index an uninterrupted build writes. (A picture fetched but not yet kept when
    the kill came is fetched again: the kill may land while other workers' answers are in flight.)"""
    out = tmp_path / "gallery"
    args = ["--dataset", str(coco_dataset), "--split", "test", "--out", str(out), *models]
    store = tmp_path / ".gallery.pictures"
    with coco_proxy(photos) as proxy:
        use_proxy(monkeypatch, proxy.url)
        killed = run_import(args, proxy.url, kill_at="picture-saved:3")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert not out.exists() and not list(tmp_path.glob(".gallery.tmp-*"))
        first = proxy.requested()
        kept = {url for url in urls if (store / pictures._key(url)).is_file()}
        assert len(kept) == 3 and sorted(path.suffix for path in store.iterdir()) == [".webp"] * 3
        assert kept <= set(first)

        done = run_import(args, proxy.url)
        assert done.returncode == 0, done.stderr[-2000:]
        second = proxy.requested()[len(first):]
        assert sorted(second) == sorted(set(urls) - kept)  # each missing one once; no kept one again
        assert all(first.count(url) == 1 for url in kept)
        reference, _ = import_dense(head_encoder, coco_dataset, tmp_path / "reference", split="test")
    resumed = SparseIndex.load(out)
    assert resumed.items == reference.items
    assert [resumed.picture(row) for row in range(ITEMS)] == [reference.picture(row) for row in range(ITEMS)]
    assert resumed.thumbnails.count == ITEMS
    np.testing.assert_array_equal(resumed.vectors.toarray(), reference.vectors.toarray())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gallery", "reference"]  # the store is gone


def test_a_proxy_that_refuses_fails_every_picture_fast_and_prepare_still_builds(coco_dataset, models, tmp_path,
                                                                                 monkeypatch, capsys):
    """HTTP_PROXY at a closed loopback port: every fetch goes there and is refused (a reason per item, no
    time-out waited for); `prepare` writes the index with placeholders and exits 0."""
    use_proxy(monkeypatch, f"http://127.0.0.1:{free_port()}")
    started = time.perf_counter()
    code = main(["prepare", "--index", str(tmp_path / "gallery"), "--dataset", str(coco_dataset), *models])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    index = SparseIndex.load(tmp_path / "gallery")
    assert len(index) == ITEMS and index.thumbnails.count == 0
    failures = printed_failures(err)
    assert sorted(failures) == sorted(item["id"] for item in index.items)
    assert all("refused" in reason for reason in failures.values()), failures
    assert seconds < pictures.FETCH_TIMEOUT
    assert not (tmp_path / ".gallery.pictures").exists()
