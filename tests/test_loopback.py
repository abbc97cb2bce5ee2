"""The loopback stand-ins of tests/helpers/loopback.py work: olah plays the Hub for huggingface_hub and
transformers, the proxy plays the COCO image host, and nginx plays Spaces' HTTPS proxy (checked in Chromium).
Never skipped: a missing tool fails with what to install."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO, ClassVar

import httpx
import pytest

from tests.helpers.data import ROOT, make_image
from tests.helpers.loopback import (CHROMIUM, COCO_HOST, OFFLINE_CHROMIUM_ARGS, coco_proxy, loopback_hub,
                                    nginx_command, olah_command, tls_front)
from tests.helpers.models import save_tokenizer

MODEL, DATASET, TOKENIZER = "Salesforce/blip-itm-base-coco", "lsr42/mscoco-blip-dense", "distilbert-base-uncased"
TEMPLATED = "google-bert/bert-base-uncased"  # a tokenizer repo with an additional_chat_templates/ folder

# Runs in a fresh interpreter: huggingface_hub reads HF_ENDPOINT when it is imported.
HUB_PROBE = """
import json, sys
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from transformers import AutoTokenizer
from mlsr.models.hub import download
from mlsr.models.tokenizer import load_tokenizer

model, dataset, tokenizer, templated = sys.argv[1:5]
api = HfApi()
print(json.dumps({
    "model_file": Path(hf_hub_download(model, "weights/blob.bin")).read_bytes().hex(),
    "dataset_file": Path(hf_hub_download(dataset, "data/train.parquet", repo_type="dataset")).read_text(),
    "model_snapshot": sorted(p.name for p in Path(snapshot_download(model)).iterdir()),
    "dataset_snapshot": Path(snapshot_download(dataset, repo_type="dataset", allow_patterns=["*.parquet"])).name,
    "mlsr_download": download(model, ["*.json"]).revision,
    "model_info": api.model_info(model).sha,
    "dataset_info": api.dataset_info(dataset).sha,
    "repo_info_main": api.repo_info(dataset, repo_type="dataset", revision="main").sha,
    "dataset_files": api.list_repo_files(dataset, repo_type="dataset"),
    "mlsr_tokens": load_tokenizer(tokenizer)[0].tokenize("Water buffalo"),
    "tokens": AutoTokenizer.from_pretrained(templated).tokenize("Water buffalo"),
}))
"""


def test_the_loopback_hub_serves_models_datasets_and_tokenizers(tmp_path):
    if olah_command() is None:
        pytest.fail("olah is missing: `python3 -m venv VENV && VENV/bin/pip install olah==0.5.4`, then"
                    " export MLSR_OLAH=VENV/bin/olah-cli (.ci/run does this)")
    model, dataset = tmp_path / "model", tmp_path / "dataset"
    (model / "weights").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "blip"}')
    (model / "weights" / "blob.bin").write_bytes(bytes(range(256)) * 400)  # binary, 100 KB
    (dataset / "data").mkdir(parents=True)
    (dataset / "data" / "train.parquet").write_text("not really parquet")
    (dataset / "README.md").write_text("---\nlicense: cc-by-4.0\n---\nCOCO vectors\n")
    templated = save_tokenizer(tmp_path / "templated")
    (templated / "additional_chat_templates").mkdir()  # see loopback_hub: olah's 401 for a missing folder
    (templated / "additional_chat_templates" / "README.md").write_text("no chat templates\n")
    repos = {("model", MODEL): model, ("dataset", DATASET): dataset,
             ("model", TOKENIZER): save_tokenizer(tmp_path / "tokenizer"), ("model", TEMPLATED): templated}
    with loopback_hub(repos, tmp_path) as hub:
        result = subprocess.run([sys.executable, "-c", HUB_PROBE, MODEL, DATASET, TOKENIZER, TEMPLATED], cwd=ROOT,
                                env={**_clean_env(), **hub.env(tmp_path / "hf-home"), "PYTHONPATH": str(ROOT)},
                                capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:] + (tmp_path / "olah.log").read_text()[-3000:]
    got = json.loads(result.stdout.splitlines()[-1])
    model_commit, dataset_commit = hub.commits["model", MODEL], hub.commits["dataset", DATASET]
    assert got["model_file"] == (bytes(range(256)) * 400).hex()
    assert got["dataset_file"] == "not really parquet"
    assert got["model_snapshot"] == ["config.json", "weights"]
    assert got["dataset_snapshot"] == got["repo_info_main"] == got["dataset_info"] == dataset_commit
    assert got["mlsr_download"] == got["model_info"] == model_commit
    assert sorted(got["dataset_files"]) == ["README.md", "data/train.parquet"]
    assert got["mlsr_tokens"] == got["tokens"] == ["water", "buffalo"]


def _clean_env() -> dict[str, str]:
    """This environment without the Hub settings of the test run (HF_HUB_OFFLINE, a cache, a token)."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("HF_", "HUGGING"))}


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    file = tmp_path / "000000000139.jpg"
    make_image(1).save(file)
    return {"val2017/000000000139.jpg": file}


def test_the_coco_proxy_serves_the_photos_to_urllib_and_httpx(photos, monkeypatch):
    url = f"http://{COCO_HOST}/val2017/000000000139.jpg"
    with coco_proxy(photos) as proxy:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
        with opener.open(url, timeout=10) as response:
            assert response.headers["Content-Type"] == "image/jpeg"
            assert response.read() == photos["val2017/000000000139.jpg"].read_bytes()
        with httpx.Client(proxy=proxy.url, timeout=10) as client:
            assert client.get(url).content == photos["val2017/000000000139.jpg"].read_bytes()
            assert client.get(f"http://{COCO_HOST}/val2017/missing.jpg").status_code == 404
            assert client.get("http://example.com/val2017/000000000139.jpg").status_code == 403
        for name, value in proxy.env().items():
            monkeypatch.setenv(name, value)
        with httpx.Client(trust_env=True, timeout=10) as client:
            assert client.get(url).status_code == 200
        assert proxy.requested() == [url, url, f"http://{COCO_HOST}/val2017/missing.jpg",
                                     "http://example.com/val2017/000000000139.jpg", url]


def test_the_coco_proxy_refuses_tunnels_and_can_fail_and_wait(photos):
    path = "val2017/000000000139.jpg"
    with coco_proxy(photos, flaky={path: 2}, delay=0.05) as proxy:
        with httpx.Client(proxy=proxy.url, timeout=10) as client:
            answers = [client.get(f"http://{COCO_HOST}/{path}") for _ in range(3)]
        assert [a.status_code for a in answers] == [503, 503, 200]
        assert answers[0].headers["Retry-After"] == "0"
        assert answers[0].elapsed.total_seconds() >= 0.05
        connection = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]), timeout=10)
        connection.set_tunnel(COCO_HOST, 443)
        with pytest.raises(OSError, match="405"):
            connection.request("GET", f"/{path}")
        connection.close()
        assert proxy.requested()[-1] == f"CONNECT {COCO_HOST}:443"


class _Site(BaseHTTPRequestHandler):
    """The upstream behind the TLS front: a page, a same-origin image, an event stream and a websocket echo."""

    protocol_version = "HTTP/1.1"
    pages: ClassVar[dict[str, tuple[str, bytes]]] = {}  # each `_site` makes a subclass with its own three
    seen: ClassVar[list[dict[str, str]]] = []
    release: ClassVar[threading.Event] = threading.Event()  # lets /stream send its second event

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.path == "/stream":
            return self.stream()
        if self.path == "/ws":
            return self.echo()
        content_type, body = self.pages.get(self.path, ("text/plain", b"not found"))
        self.send_response(200 if self.path in self.pages else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self) -> None:
        """Server-sent events: the first one must reach the client before the second is even written."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"data: one\n\n")
        self.wfile.flush()
        self.release.wait(10)
        self.wfile.write(b"data: two\n\n")
        self.close_connection = True

    def echo(self) -> None:
        """A websocket-style upgrade, then one line echoed back."""
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.write(self.rfile.readline())
        self.wfile.flush()
        self.close_connection = True


@contextmanager
def _site(pages: dict[str, tuple[str, bytes]]) -> Iterator[tuple[int, type[_Site]]]:
    """Serve `pages` ({path: (content type, body)}) over plain HTTP on a loopback port; yields (port, handler)."""
    handler = type("Site", (_Site,), {"pages": pages, "seen": [], "release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def front(tmp_path):
    """A site of one page with a same-origin image and a COCO image, behind the TLS front."""
    if nginx_command() is None:
        pytest.fail("nginx is missing: install Debian's nginx and openssl (`apt-get install -y nginx openssl`).")
    png = tmp_path / "local.png"
    make_image(2).save(png)
    page = (b'<!doctype html><title>front</title><img id="local" src="/local.png">'
            b'<img id="coco" src="http://images.cocodataset.org/x.jpg">')
    pages = {"/": ("text/html", page), "/local.png": ("image/png", png.read_bytes())}
    with _site(pages) as (port, site), tls_front(port, tmp_path / "nginx") as url:
        yield url, site


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


@contextmanager
def _tls_request(port: int, request: bytes) -> Iterator[tuple[ssl.SSLSocket, BinaryIO]]:
    """Send raw `request` to the front over TLS; yields the socket and its reader (reads time out after 3 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, _unverified().wrap_socket(raw) as tls:
        tls.sendall(request)
        yield tls, tls.makefile("rb")


def _lines_until(reader: BinaryIO, wanted: bytes, limit: int = 50) -> list[bytes]:
    """The lines read up to and including `wanted`; fails at the end of the stream or after `limit` lines."""
    lines = []
    while not lines or lines[-1] != wanted:
        lines.append(reader.readline())
        assert lines[-1] and len(lines) <= limit, f"no {wanted!r} in {lines}"
    return lines


def test_the_tls_front_forwards_https_streams_and_upgrades(front):
    url, site = front
    with urllib.request.urlopen(url, context=_unverified(), timeout=10) as response:
        assert b'id="local"' in response.read()
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    assert site.seen[-1]["x-forwarded-proto"] == "https"
    assert site.seen[-1]["x-forwarded-host"] == site.seen[-1]["host"] == f"127.0.0.1:{port}"
    # The first event arrives while the upstream still holds the second (a buffering proxy would time out here).
    with _tls_request(port, b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") as (_, reader):
        assert _lines_until(reader, b"data: one\n")[0].startswith(b"HTTP/1.1 200")
        site.release.set()
    upgrade = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    with _tls_request(port, upgrade) as (tls, reader):
        assert _lines_until(reader, b"\r\n")[0].startswith(b"HTTP/1.1 101")
        tls.sendall(b"ping\n")
        assert reader.readline() == b"ping\n"
    assert site.seen[-1]["upgrade"] == "websocket" and site.seen[-1]["connection"].lower() == "upgrade"


def test_chromium_loads_the_page_through_the_front_but_no_plain_http_image(front):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`).")
    url, _ = front
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=OFFLINE_CHROMIUM_ARGS)
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.goto(url, wait_until="load", timeout=20_000)
            widths = page.evaluate("[...document.images].map(image => [image.id, image.naturalWidth])")
        finally:
            browser.close()
    print("\n".join(console))
    assert dict(widths) == {"local": 48, "coco": 0}
    assert any("Mixed Content" in line and COCO_HOST in line for line in console), console
