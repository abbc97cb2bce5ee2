"""`--index OWNER/NAME[@REVISION]` on the command line: search reads a Hub index from the (offline) cache,
and every command that takes --index keeps the id as typed."""

import json

import pytest

from mlsr.cli import build_parser, main
from tests.helpers.hub import add_snapshot, offline_hub

COMMIT = "c" * 40


@pytest.fixture
def model_args(backbone_dir, head_dir, tokenizer_dir):
    return ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir),
            "--device", "cpu"]


def test_search_by_hub_id_ranks_like_the_local_folder(model_args, encoder, image_folder, tmp_path, monkeypatch, capsys):
    from mlsr.data.captions import read_captions
    from mlsr.ingest.images import build_index

    build_index(encoder, image_folder, out=tmp_path / "idx", documents="caption",
                captions=read_captions(image_folder / "captions.csv"))
    cache = offline_hub(monkeypatch, tmp_path / "cache")
    add_snapshot(cache, "someone/photos", tmp_path / "idx", COMMIT)
    monkeypatch.chdir(tmp_path)  # no ./someone here
    query = ["-k", "3", "--json", "dogs in the park", *model_args]
    assert main(["search", "--index", str(tmp_path / "idx"), *query]) == 0
    local = json.loads(capsys.readouterr().out)
    for name in ("someone/photos", "someone/photos@main", f"hf://datasets/someone/photos@{COMMIT}"):
        assert main(["search", "--index", name, *query]) == 0
        hub = json.loads(capsys.readouterr().out)
        assert [(h["id"], h["score"], h["terms"]) for h in hub["results"]] == \
               [(h["id"], h["score"], h["terms"]) for h in local["results"]]


def test_an_uncached_hub_index_offline_is_one_line(model_args, tmp_path, monkeypatch, capsys):
    offline_hub(monkeypatch, tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--index", "someone/never-pushed", "a query", *model_args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: index 'someone/never-pushed' is not a local folder, the Hugging Face Hub could not"
                          " be reached") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", [["search", "q"], ["evaluate"], ["export", "--milvus-uri", "x.db"]])
def test_every_index_argument_keeps_a_hub_id_as_typed(command):
    for name in ("owner/name@v1", "hf://datasets/owner/name"):  # a Path would fold hf:// into hf:/
        args = build_parser().parse_args([command[0], "--index", name, *command[1:]])
        assert args.index == name


def test_evaluate_a_hub_index_names_its_runs_after_the_repo(model_args, encoder, image_folder, tmp_path, monkeypatch,
                                                            capsys):
    from mlsr.data.captions import read_captions
    from mlsr.ingest.images import build_index

    build_index(encoder, image_folder, out=tmp_path / "idx", documents="caption",
                captions=read_captions(image_folder / "captions.csv"))
    add_snapshot(offline_hub(monkeypatch, tmp_path / "cache"), "someone/photos", tmp_path / "idx", COMMIT)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.tsv").write_text("q1\ta red bus on a street\nq2\ta cat on a sofa\n")
    (tmp_path / "qrels.trec").write_text("q1 0 bus.jpg 1\nq2 0 more/cat.jpg 1\n")
    common = ["--queries", "q.tsv", "--qrels", "qrels.trec", "--runs", "expand", "--json", *model_args]
    assert main(["evaluate", "--index", "idx", *common]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--index", "someone/photos@main", *common]) == 0
    hub = json.loads(capsys.readouterr().out)
    assert hub["runs"][0]["metrics"] == local["runs"][0]["metrics"] and hub["documents"] == 6
    assert (tmp_path / "runs" / "photos" / "expand.trec").is_file()
