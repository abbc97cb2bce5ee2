"""Requests carry uploads only: a URL given as an image is refused before the server opens any connection, a path
outside the upload folder is refused, and each refusal is one log line and a message to the client (the app runs
in this process here, so that Gradio's downloader can be watched)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.helpers.app import server_paths
from tests.helpers.loopback import free_port
from tests.helpers.data import REAL_IMAGES, ROOT

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # pandas deprecations inside Gradio's queue


@pytest.fixture(scope="module")
def served(app_index, backbone_dir, app_head_dir, tokenizer_dir):
    """The app's Blocks (build_ui over a loaded Service), launched in this process; yields (base URL, demo)."""
    from mlsr.serving.service import Service
    from mlsr.app.ui import build_ui

    service = Service.load(app_index, backbone=str(backbone_dir), head=str(app_head_dir), tokenizer=str(tokenizer_dir),
                           device="cpu")
    demo = build_ui(service, examples_dir=ROOT / "assets" / "examples", images_dir=ROOT / "assets" / "images",
                    placeholder=ROOT / "assets" / "missing.png")
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            allowed_paths=[str(ROOT / "assets")], quiet=True)
    yield url, demo
    demo.close()


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """Every URL Gradio's downloader is asked to fetch (it would open a connection for each)."""
    from gradio import processing_utils

    asked: list[str] = []
    original = processing_utils.async_ssrf_protected_download

    async def recording(url, cache_dir):
        asked.append(url)
        return await original(url, cache_dir)

    monkeypatch.setattr(processing_utils, "async_ssrf_protected_download", recording)
    return asked


def call_api(url: str, name: str, data: list) -> tuple[str, object]:
    """('complete', output) or ('error', message) of a named endpoint, over Gradio's plain HTTP API."""
    event = httpx.post(f"{url}gradio_api/call/{name}", json={"data": data}, timeout=30).json()["event_id"]
    text = httpx.get(f"{url}gradio_api/call/{name}/{event}", timeout=120).text
    kind = text.split("event: ", 1)[1].split("\n", 1)[0]
    payload = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])
    assert not server_paths(payload), payload  # no answer of the API names a path on the server
    return kind, payload[0] if kind == "complete" else (payload or {}).get("error")


def call_ui(url: str, demo, handler: str, data: list) -> tuple[str, object]:
    """('complete', outputs) or ('error', message) of a UI event (not a named endpoint), as the browser sends it."""
    fn_index = next(i for i, fn in demo.fns.items() if getattr(fn.fn, "__name__", "") == handler)
    session = f"test-{handler}"
    httpx.post(f"{url}gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                     "event_data": None, "trigger_id": None}, timeout=30)
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                message = json.loads(line[6:])
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    return ("complete", output.get("data")) if message.get("success") else ("error", output.get("error"))
    raise AssertionError("no answer")


FILE = {"_type": "gradio.FileData"}
URLS = ["http://127.0.0.1:9/photo.jpg", "https://example.com/photo.jpg", "//example.com/photo.jpg",
        "data:image/png;base64,iVBORw0KGgo="]


@pytest.mark.parametrize("target", URLS)
@pytest.mark.parametrize("shape", ["path", "path+meta", "url"])
def test_an_image_url_is_refused_without_a_connection(served, downloads, caplog, capfd, target, shape):
    url, demo = served
    payload = {"url": target} if shape == "url" else {"path": target, **({"meta": FILE} if "meta" in shape else {})}
    for answer in (call_api(url, "image_terms", [payload, 5]), call_ui(url, demo, "on_image", [payload, None, 5])):
        assert answer == ("error", "image URLs are not fetched by this app: upload the image file instead.")
    assert downloads == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("mlsr")] == [
        "refused image_terms: image URLs are not fetched by this app: upload the image file instead.",
        "refused on_image: image URLs are not fetched by this app: upload the image file instead."]
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("payload", [{"path": "/etc/passwd"}, {"path": "/etc/passwd", "meta": FILE},
                                     {"path": str(REAL_IMAGES / "COCO_val2014_000000184613.jpg"), "meta": FILE},
                                     {"path": "/tmp/gradio/../../etc/hostname"}])
def test_a_server_path_is_refused_with_one_line(served, caplog, capfd, payload):
    url, demo = served
    refused = "the file was not uploaded to this app: upload it instead."
    for answer in (call_api(url, "image_terms", [payload, 5]), call_api(url, "similar", [payload, 3])):
        assert answer == ("error", refused)
    status, outputs = call_ui(url, demo, "on_image", [payload, None, 5])
    # the screen shows the refusal where its summary goes (a placeholder, no error overlay), or Gradio refuses it
    shown = str(outputs[1]).replace("\\", "") if status == "complete" else ""  # Markdown escapes the ':'
    assert (status, outputs) == ("error", refused) or refused in shown
    refusals = [r for r in caplog.records if r.name.startswith("mlsr")]
    assert len(refusals) == 3 and all(r.getMessage().startswith("refused ") for r in refusals)
    assert "Traceback" not in capfd.readouterr().err


def test_an_upload_still_works(served):
    from gradio_client import Client, handle_file

    url, _ = served
    found = Client(url, verbose=False).predict(handle_file(str(REAL_IMAGES / "COCO_val2014_000000184613.jpg")), 5,
                                               api_name="/image_terms")
    assert found["active_terms"] > 0 and len(found["terms"]) == 5


@pytest.mark.parametrize("name, data, message", [
    ("suggest", ["a dog", 1.5, "expand"], "k must be a whole number, got 1.5."),
    ("suggest", ["a dog", True, "expand"], "k must be a whole number, got True."),
    ("suggest", ["a dog", "3", "expand"], "k must be a whole number, got '3'."),
    ("suggest", ["a dog", 0, "expand"], "k must be between 1 and 100, got 0."),
    ("suggest", ["a dog", 5, "sideways"], "mode must be one of expand, no_expand, hybrid, got 'sideways'."),
    ("suggest", [["a dog"], 5, "expand"], "expected text (str), got list."),
    ("search_terms", ["dog", 5], "the term table must be a list of [term, weight] rows."),
    ("compare", ["a dog", 101], "k must be between 1 and 100, got 101."),
])
def test_bad_parameters_get_the_librarys_message(served, caplog, capfd, name, data, message):
    url, _ = served
    assert call_api(url, name, data) == ("error", message)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("mlsr")] == [f"refused {name}: {message}"]
    assert "Traceback" not in capfd.readouterr().err
