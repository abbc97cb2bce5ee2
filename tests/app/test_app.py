"""The app through its named API endpoints, started as users start it (`python app.py ...`) on 127.0.0.1."""

from __future__ import annotations

import io
import json
import struct
import urllib.parse
import zlib

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.helpers.app import PathScanningClient, server_paths, start_app
from tests.helpers.data import REAL_IMAGES, ROOT
from tests.helpers.models import PLANTED_WORDS
from mlsr.index.dense import DenseIndex
from mlsr.index.sparse import SparseIndex
from mlsr.serving.terms import vector_from_terms

BUFFALO = REAL_IMAGES / "COCO_val2014_000000184613.jpg"
ARTICLE = (ROOT / "assets" / "examples" / "water-buffalo.txt").read_text()


@pytest.fixture(scope="session")
def private_paths(app_index, backbone_dir, app_head_dir, tokenizer_dir) -> tuple[str, ...]:
    """Folders of this server that no answer may name: the index, the photos beside it, the models, the code."""
    return tuple(str(path) for path in (app_index.parent, backbone_dir, app_head_dir, tokenizer_dir, ROOT))


@pytest.fixture(scope="session")
def client(app_url, private_paths) -> PathScanningClient:
    """Every JSON the API returns in these tests (and every error message) is scanned for server paths."""
    return PathScanningClient(Client(app_url, verbose=False), private_paths)


@pytest.fixture(scope="session")
def local_index(app_index) -> SparseIndex:
    return SparseIndex.load(app_index)


def test_named_endpoints_are_published(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/suggest", "/suggest_article", "/image_terms", "/similar", "/compare", "/search_terms"} <= set(endpoints)


def test_suggest_ranks_like_the_library(client, app_encoder, local_index):
    result = client.predict(ARTICLE, 5, "expand", api_name="/suggest")
    assert [hit["rank"] for hit in result["results"]] == [1, 2, 3, 4, 5]
    expected = local_index.search(app_encoder.encode_text([ARTICLE]), 5)
    assert [hit["row"] for hit in result["results"]] == expected.indices[0].tolist()
    np.testing.assert_allclose([hit["score"] for hit in result["results"]], expected.scores[0], atol=1e-3)
    terms = {term for term, _ in result["query_terms"]}
    assert {"buffalo", "market", "field"} <= terms
    controls = int(app_encoder.vocab.special_mask[app_encoder.encode_text([ARTICLE]).indices].sum())
    assert result["active_terms"] == len(result["query_terms"]) + controls  # control tokens are no table rows
    expansion = {term for term, _ in result["expansion_terms"]}
    assert "buffalo" not in expansion and {"boy", "cake", "road"} <= expansion | terms
    assert set(result["timings_ms"]) == {"encode", "search"}


@pytest.mark.parametrize("mode", ["no_expand", "hybrid"])
def test_other_query_modes(client, mode):
    result = client.predict("a boy and a buffalo at the market", 3, mode, api_name="/suggest")
    assert len(result["results"]) == 3
    if mode == "no_expand":  # only the text's own words may carry weight
        assert {term for term, _ in result["query_terms"]} <= {"a", "boy", "and", "buffalo", "at", "the", "market"}


def test_edited_terms_search_with_exactly_the_edited_vector(client, app_encoder, local_index):
    suggested = client.predict("a boy leading a buffalo to the market", 3, "no_expand", api_name="/suggest")
    rows = [row for row in suggested["query_terms"] if row[0] != "market"]  # delete a term
    rows = [[term, -weight if term == "boy" else weight] for term, weight in rows]  # negate one
    rows.append(["cake", 2.5])  # add one
    rows.append(["motorbike", 1.0])  # a word the vocabulary spells with several pieces
    edited = client.predict(rows, 4, api_name="/search_terms")
    vector = vector_from_terms(rows, app_encoder.vocab, app_encoder.tokenizer)
    expected = local_index.search(vector, 4)
    assert [hit["row"] for hit in edited["results"]] == expected.indices[0].tolist()
    np.testing.assert_allclose([hit["score"] for hit in edited["results"]], expected.scores[0], atol=1e-3)
    assert edited["active_terms"] == vector.nnz


def test_image_terms_and_similar(client, app_encoder, local_index):
    found = client.predict(handle_file(str(BUFFALO)), 10, api_name="/image_terms")
    local = app_encoder.encode_images([BUFFALO])
    assert found["active_terms"] == local.nnz
    assert [t for t, _ in found["terms"]] == [t for t, _ in app_encoder.decode(local[0], top_k=10)]
    assert set(PLANTED_WORDS) <= {t for t, _ in found["terms"]}
    similar = client.predict(handle_file(str(BUFFALO)), 4, api_name="/similar")
    expected = local_index.search(local, 4)
    assert [hit["row"] for hit in similar["similar"]] == expected.indices[0].tolist()


def test_compare_sparse_and_dense(client, app_encoder, local_index):
    result = client.predict("a woman cutting a cake", 4, api_name="/compare")
    dense = DenseIndex(local_index.dense).search(app_encoder.encode_text_views(["a woman cutting a cake"]).dense, 4)
    assert [hit["row"] for hit in result["dense"]] == dense.indices[0].tolist()
    sparse_rows = {hit["row"] for hit in result["sparse"]}
    assert result["overlap_at_k"] == pytest.approx(len(sparse_rows & set(dense.indices[0].tolist())) / 4)
    assert {"sparse_encode", "sparse_search", "dense_encode", "dense_search"} == set(result["timings_ms"])


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("text, k, message", [
    ("", 5, "empty"), ("   \n ", 5, "empty"), ("word " * 5000, 5, "limit"), ("x" * 1_000_000, 5, "limit"),
    ("a dog", 0, "between 1 and"),
])
def test_bad_text_gets_a_clear_message(client, text, k, message):
    with pytest.raises(AppError, match=message):
        client.predict(text, k, "expand", api_name="/suggest")


@pytest.mark.parametrize("rows, message", [
    ([["zzqxvwkj", 1.0]], "not in the vocabulary .it would take"),
    ([["\U0001f9ac", 1.0]], "not in the vocabulary"),
    ([["dog", "inf"]], "finite"),
    ([["dog", "heavy"]], "not a number"),
    ([["dog", 1e9]], "above"),
    ([["dog", 0]], "empty"),
    ([["dog", 1.0]] * 2001, "more than"),
])
def test_bad_term_tables_get_a_clear_message(client, rows, message):
    with pytest.raises(AppError, match=message):
        client.predict(rows, 3, api_name="/search_terms")


@pytest.mark.parametrize("name, data, message", [
    ("notes.jpg", b"this is not an image", "the file is not an image that can be read: use JPEG"),
    ("half.jpg", encoded(Image.effect_noise((64, 64), 40).convert("RGB"), "JPEG")[:600], "damaged or truncated"),
    ("empty.png", b"", "empty"),
    ("bomb.png", bomb_png(30000, 30000), "decompression bomb|allowed"),
])
def test_bad_images_get_a_clear_message(client, tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(tmp_path / name)), 5, api_name="/image_terms")


def exif_rotated() -> bytes:
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6
    return encoded(image, "JPEG", exif=exif)


@pytest.mark.parametrize("name, data", [
    ("rgba.png", encoded(Image.new("RGBA", (30, 20), (10, 200, 30, 100)), "PNG")),
    ("cmyk.jpg", encoded(Image.new("CMYK", (30, 20), (0, 100, 200, 0)), "JPEG")),
    ("gray.png", encoded(Image.new("L", (30, 20), 128), "PNG")),
    ("rotated.jpg", exif_rotated()),
])
def test_unusual_images_work(client, tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    found = client.predict(handle_file(str(tmp_path / name)), 5, api_name="/image_terms")
    assert found["active_terms"] > 0 and len(found["terms"]) == 5


@pytest.mark.parametrize("text", ["\x00\x01 nul and control characters \x7f a buffalo", "水牛 buffalo 🐃 Ünïcödé"])
def test_odd_characters_are_searched(client, text):
    found = client.predict(text, 3, "expand", api_name="/suggest")
    assert len(found["results"]) == 3 and found["query_terms"]


def test_the_app_keeps_serving_after_errors(client):
    with pytest.raises(AppError):
        client.predict("", 5, "expand", api_name="/suggest")
    assert client.predict("a buffalo", 2, "expand", api_name="/suggest")["results"]


def test_missing_index_shows_what_to_do(app_args, tmp_path):
    args = list(app_args)
    args[args.index("--index") + 1] = str(tmp_path / "no-index-here")
    process, url = start_app(args, tmp_path / "app.log")
    try:
        config = Client(url, verbose=False).config
        text = str(config)
        assert "no index at" in text and "build-index" in text
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "mlsr: cannot start: no index at" in (tmp_path / "app.log").read_text()
    assert "Traceback" not in (tmp_path / "app.log").read_text()


def test_only_assets_and_gradio_outputs_are_served(app_url, app_index):
    import urllib.error
    import urllib.request

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(f"{app_url}gradio_api/file={path}", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert status(str(ROOT / "assets" / "missing.png")) == 200
    for private in ("/etc/passwd", str(app_index / "manifest.json"), str(ROOT / "app.py"),
                    str(app_index.parent / "photos" / "bus.jpg")):
        assert status(private) in (403, 404), private


def test_unavailable_model_shows_what_to_do(app_args, capsys, monkeypatch):
    import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    args = list(app_args)
    args[args.index("--head") + 1] = "lsr42/never-downloaded-head"
    page = app.create_app(app.parse_args(args))
    assert "could not be reached" in str(page.config) and "local folder" in str(page.config)
    assert capsys.readouterr().err.startswith("mlsr: cannot start: sparse head 'lsr42/never-downloaded-head'")


def served_picture(app_url: str, image: str) -> Image.Image:
    """Fetch a hit's `image` (a URL relative to the app) from the app itself; it must be a real picture."""
    import urllib.parse
    import urllib.request

    url = urllib.parse.urljoin(app_url, image)
    assert url.startswith(app_url), url  # the app's own origin, never a third party
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"] == "image/webp"
        picture = Image.open(io.BytesIO(response.read()))
        picture.load()
    assert max(picture.size) <= 512
    return picture


def test_every_hit_has_a_picture_the_app_serves(client, app_url, local_index):
    """/suggest, /suggest_article, /similar, /compare and /search_terms hits of a local gallery carry an image URL
    that the app serves (a real picture, the item's own thumbnail); none is null, none names a server path."""
    found = client.predict("a bus in the city", 9, "expand", api_name="/suggest")
    assert {hit["id"] for hit in found["results"]} >= {"bus.jpg", "more/cat.jpg"}
    article = client.predict(ARTICLE, 2, True, api_name="/suggest_article")
    similar = client.predict(handle_file(str(BUFFALO)), 3, api_name="/similar")
    compared = client.predict("a bus", 3, api_name="/compare")
    terms = client.predict([["bus", 1.0]], 3, api_name="/search_terms")
    hits = (found["results"] + [hit for section in article["sections"] for hit in section["results"]]
            + similar["similar"] + compared["sparse"] + compared["dense"] + terms["results"])
    assert len(hits) >= 20
    for hit in hits:
        assert {"id", "score", "image", "source", "caption"} <= set(hit) and hit["source"] is None  # local photos
        assert hit["image"] == f"thumbnails/{urllib.parse.quote(hit['id'], safe='')}"
        row = next(row for row, item in enumerate(local_index.items) if item["id"] == hit["id"])
        picture = served_picture(app_url, hit["image"])
        assert picture.size == Image.open(io.BytesIO(local_index.picture(row))).size


def test_a_picture_url_of_no_item_is_a_404(app_url):
    import urllib.error
    import urllib.request

    for name in ("no-such-item.jpg", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{app_url}thumbnails/{name}", timeout=30)
        assert refused.value.code == 404 and b"/etc" not in refused.value.read()


def test_the_page_names_no_server_path(app_url, private_paths):
    """The About screen (and everything else in the page's configuration) names folders, never their paths."""
    import urllib.request

    with urllib.request.urlopen(f"{app_url}config", timeout=30) as response:
        config = json.loads(response.read())
    about = next(c["props"]["value"] for c in config["components"] if c.get("props", {}).get("elem_id") == "about-text")
    assert "### Index `index`" in about and "(local folder)" in about
    assert not server_paths(about, private_paths), about
    assert not [path for path in private_paths if path in json.dumps(config)]


@pytest.mark.parametrize("top_k, message", [(0, "top_k must be between 1 and 200, got 0."),
                                            (-1, "top_k must be between 1 and 200, got -1."),
                                            (201, "top_k must be between 1 and 200, got 201."),
                                            (2.5, "top_k must be a whole number, got 2.5.")])
def test_image_terms_top_k_follows_the_one_rule(client, top_k, message):
    with pytest.raises(AppError, match=f"^{message.replace('.', '[.]')}$"):
        client.predict(handle_file(str(BUFFALO)), top_k, api_name="/image_terms")


@pytest.mark.parametrize("k", [1.5, True, "3"])
def test_k_must_be_a_whole_number(client, k):
    with pytest.raises(AppError, match="k must be a whole number"):
        client.predict("a dog", k, "expand", api_name="/suggest")
