"""The command line, end to end on generated images with tiny models."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.data import ROOT

from mlsr.cli import main
from mlsr.index.sparse import SparseIndex
from mlsr.retrieval import search_texts



@pytest.fixture
def model_args(backbone_dir, head_dir, tokenizer_dir):
    return ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir), "--device", "cpu"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mlsr", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def test_build_index_then_search_end_to_end(model_args, image_folder, tmp_path):
    out = tmp_path / "index" / "photos"
    built = run_cli("build-index", "--images", str(image_folder), "--captions", str(image_folder / "captions.csv"),
                    "--doc", "image+caption", "--dense", "--out", str(out), *model_args)
    assert built.returncode == 0, built.stderr
    assert "indexed 6 images" in built.stdout
    assert "encoding images" in built.stderr  # the tqdm progress bar
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 6 and manifest["documents"] == "image+caption" and manifest["dense_size"] == 256

    found = run_cli("search", "--index", str(out), "-k", "3", "--json", "two dogs playing", "a sailing boat", *model_args)
    assert found.returncode == 0, found.stderr
    lines = [json.loads(line) for line in found.stdout.splitlines()]
    assert [line["query"] for line in lines] == ["two dogs playing", "a sailing boat"]
    for line in lines:
        assert [hit["rank"] for hit in line["results"]] == [1, 2, 3]
        scores = [hit["score"] for hit in line["results"]]
        assert scores == sorted(scores, reverse=True)
        assert all(hit["image"].endswith((".jpg", ".png")) for hit in line["results"])


@pytest.mark.parametrize("mode", ["expand", "no_expand", "hybrid"])
def test_search_modes_print_ranked_items_with_terms(model_args, encoder, image_folder, tmp_path, capsys, mode):
    from mlsr.data.captions import read_captions
    from mlsr.ingest.images import build_index

    build_index(encoder, image_folder, out=tmp_path / "idx", documents="caption",
                captions=read_captions(image_folder / "captions.csv"))
    args = ["search", "--index", str(tmp_path / "idx"), "--mode", mode, "-k", "2", *model_args]
    hits = int((search_texts(encoder, SparseIndex.load(tmp_path / "idx"), "dogs in the park", 2, mode)[0]
                .indices[0] >= 0).sum())  # only images that share a term with the text are hits
    assert main([*args, "dogs in the park"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("query: dogs in the park") and all(f"  {n}. " in out for n in range(1, hits + 1))
    assert f"  {hits + 1}. " not in out and ("no indexed image shares a term" in out) == (hits == 0)
    assert main([*args, "--json", "--terms", "100", "dogs in the park"]) == 0
    found = json.loads(capsys.readouterr().out)["results"]
    assert len(found) == hits
    for hit in found:
        assert sum(value for _, value in hit["terms"]) == pytest.approx(hit["score"], abs=5e-3)
        if mode == "no_expand":  # the query holds only its own tokens, so only they can match
            assert {term for term, _ in hit["terms"]} <= {"dogs", "in", "the", "park"}


def test_search_hybrid_depth_is_a_parameter(model_args, encoder, image_folder, tmp_path, capsys):
    from mlsr.data.captions import read_captions
    from mlsr.index.modes import rank
    from mlsr.query_vectors import QueryVectors
    from mlsr.index.sparse import SparseIndex
    from mlsr.ingest.images import build_index

    build_index(encoder, image_folder, out=tmp_path / "idx", documents="image+caption",
                captions=read_captions(image_folder / "captions.csv"))
    args = ["search", "--index", str(tmp_path / "idx"), "--mode", "hybrid", "-k", "4", "--json", *model_args]
    index, text = SparseIndex.load(tmp_path / "idx"), "two dogs playing with a ball"
    views = encoder.encode_text_views(text)
    for depth in (1, 10):
        assert main([*args, "--hybrid-depth", str(depth), text]) == 0
        rows = [index.items.index(next(i for i in index.items if i["id"] == hit["id"]))
                for hit in json.loads(capsys.readouterr().out)["results"]]
        want = rank(index, QueryVectors(views.expand, views.no_expand), "hybrid", 4, depth).indices[0].tolist()
        assert rows == [row for row in want if row >= 0]
    assert main([*args, "--hybrid-depth", "0", text]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the hybrid depth must be at least 1, got 0") and len(err.splitlines()) == 1


def test_terms_for_an_image_and_a_text(model_args, image_folder, capsys):
    assert main(["terms", str(image_folder / "bus.jpg"), "--top-k", "5", *model_args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("active terms; top 5:") and len(out) == 6
    assert main(["terms", "--text", "a cat on a sofa", "--mode", "no_expand", "--json", *model_args]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {term for term, _ in result["terms"]} <= {"a", "cat", "on", "sofa"}


def test_errors_are_one_line_without_traceback(model_args, tmp_path, capsys):
    assert main(["search", "--index", str(tmp_path / "missing"), "query", *model_args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no index at") and "Traceback" not in err
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    assert main(["terms", str(tmp_path / "bad.jpg"), *model_args]) == 2
    assert "not an image" in capsys.readouterr().err
    assert main(["terms", "--text", "   ", *model_args]) == 2
    assert "empty" in capsys.readouterr().err


def test_offline_hub_id_gives_a_clear_message(tokenizer_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # restored afterwards, whatever it was
    code = main(["terms", "--text", "a dog", "--head", "lsr42/not-cached-anywhere", "--tokenizer", str(tokenizer_dir)])
    assert code == 2
    assert "could not be reached" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["build-index", "search", "terms"])
def test_every_subcommand_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "--backbone" in result.stdout and "--head" in result.stdout


def bomb_png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name, data, message", [
    ("zero.jpg", b"", "is empty"),
    ("truncated.jpg", (ROOT / "assets" / "images" / "COCO_val2014_000000522418.jpg").read_bytes()[:5000],
     "damaged or truncated"),
    ("bomb.png", bomb_png(30000, 30000), "decompression bomb|allowed"),
])
def test_bad_images_on_the_command_line(model_args, tmp_path, capsys, name, data, message):
    (tmp_path / name).write_bytes(data)
    assert main(["terms", str(tmp_path / name), *model_args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err)


@pytest.mark.parametrize("text, code, expected", [
    ("x" * 1_000_000, 2, "limit"),  # a megabyte of text, through standard input
    ("\x00\x01 nul and control characters \x7f", 0, "active terms"),
    ("水牛 buffalo 🐃 Ünïcödé", 0, "active terms"),
    ("   \n\t ", 2, "empty"),
])
def test_texts_from_standard_input(model_args, text, code, expected):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "mlsr", "terms", "--text", "-", *model_args], input=text,
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == code, result.stderr
    assert expected in (result.stdout if code == 0 else result.stderr)
    assert "Traceback" not in result.stderr
