"""Galleries from a wiki's files, through a loopback MediaWiki API whose answers these tests record in the documented
format: continuation, extmetadata with HTML in Artist, missing fields, a non-free file, a non-image, a file too
large, a picture that is gone, a 429 with Retry-After and a 503; the right items with the right credits, the rest
skipped and listed, the User-Agent sent, one API request at a time, resumed after a SIGKILL."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from mlsr._files import KILL_AT_ENV
from mlsr.cli import main
from mlsr.errors import InputError
from mlsr.index.sparse import SparseIndex
from mlsr.index.thumbnails import thumbnail_of
from mlsr.ingest.licences import _licence_family, parse_licences, plain
from mlsr.ingest.mediawiki import file_title
from tests.helpers.data import ROOT, make_image
from tests.helpers.mediawiki import file_page, mediawiki, record_wiki

CATEGORY = "Category:Water buffalo"
SUBCATEGORY = "Category:Water buffalo in India"
CONTACT = "editor@example.org"
KEPT = ["File:Buffalo A.jpg", "File:Buffalo B.png", "File:Buffalo C.jpg", "File:Buffalo D.jpg"]


def pages() -> list[dict]:
    """The recorded files: four free images (one with HTML everywhere, one with fields missing), and five that
    are skipped for one reason each."""
    return [
        file_page("File:Buffalo A.jpg", meta={
            "Artist": '<a href="//commons.wikimedia.org/wiki/User:Jane" title="User:Jane">Jane &amp; <b>Doe</b></a>',
            "LicenseShortName": "CC BY-SA 4.0", "LicenseUrl": "https://creativecommons.org/licenses/by-sa/4.0",
            "AttributionRequired": "true",
            "ImageDescription": '<p>Water buffalo <b>bathing</b> in a river &lt;script&gt;</p>'}),
        file_page("File:Buffalo B.png", mime="image/png", meta={"LicenseShortName": "CC0"}),  # no author, no text
        file_page("File:Huge.tif", mime="image/tiff", width=20000, height=10000,
                  meta={"LicenseShortName": "CC0", "Artist": "Big"}),
        file_page("File:Logo.jpg", meta={"LicenseShortName": "Fair use", "NonFree": "true", "Artist": "Corp"}),
        file_page("File:Buffalo video.webm", mime="video/webm", meta={"LicenseShortName": "CC0"}),
        file_page("File:Buffalo C.jpg", meta={"LicenseShortName": "Public domain", "Artist": "Unknown 1890s",
                                              "ImageDescription": "Buffalo ploughing a paddy field"}),
        file_page("File:Gone.jpg", picture="{HOST}/images/thumb/gone.jpg",
                  meta={"LicenseShortName": "CC0", "Artist": "X"}),
        file_page("File:Buffalo D.jpg", meta={
            "Artist": "Ravi K.", "LicenseShortName": "CC BY 2.0", "LicenseUrl": "https://creativecommons.org/licenses/by/2.0",
            "AttributionRequired": "true", "Attribution": "Photo: <i>Ravi K.</i> / Flickr",
            "ImageDescription": "A water buffalo calf in Kerala"}),
    ]


@pytest.fixture
def wiki(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """The recorded wiki (two answers per category listing: continuation) and a distinct picture per file."""
    recorded = pages()
    members = {CATEGORY: [p["title"] for p in recorded[:5]] + [SUBCATEGORY],
               SUBCATEGORY: [p["title"] for p in recorded[5:]] + ["File:Buffalo A.jpg"]}
    folder = record_wiki(tmp_path / "wiki", members, recorded, page_size=2)
    images = {}
    for number, page in enumerate(recorded):
        path = unquote(urlsplit(page["imageinfo"][0]["thumburl"].replace("{HOST}", "http://h")).path)
        if "gone" not in path:
            buffer = io.BytesIO()
            make_image(300 + number, (120, 90)).save(buffer, format="PNG")
            images[path] = buffer.getvalue()
    return folder, images


@pytest.fixture
def models(backbone_dir, head_dir, tokenizer_dir) -> list[str]:
    return ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir),
            "--device", "cpu", "--batch-size", "2"]


def build_args(api: str, out: Path, models: list[str], *extra: str) -> list[str]:
    return ["build-index", "--commons", CATEGORY, "--depth", "1", "--commons-api", api, "--contact", CONTACT,
            "--out", str(out), "--doc", "image+caption", *models, *extra]


def thumb_path(title: str) -> str:
    name = title.split(":", 1)[1].replace(" ", "_")
    return f"/images/thumb/{name}/500px-{name}"


def test_a_category_becomes_a_gallery_with_credits_and_the_rest_is_listed(wiki, models, tmp_path, capsys):
    """Category and subcategory followed through continuation; four free images indexed in the wiki's order with
    author (HTML stripped), licence, attribution, description page and caption; the rest listed with the reason;
    the 429 (Retry-After: 1) and the 503 asked again; every request with the contact; never two API requests at
    once; pictures fetched only from the URLs the API gave."""
    folder, images = wiki
    lagged = json.dumps({"error": {"code": "maxlag", "info": "Waiting for a database server: 7 seconds lagged."}})
    failures = {1: (429, {"Retry-After": "1"}, b"slow down"), 3: (503, {"Retry-After": "0"}, b"busy"),
                5: (200, {"Retry-After": "0", "X-Database-Lag": "7", "Content-Type": "application/json"},
                    lagged.encode())}
    with mediawiki(folder, images, failures=failures, delay=0.02) as server:
        started = time.monotonic()
        code = main(build_args(server.url, tmp_path / "gallery", models))
        out, err = capsys.readouterr()
    assert code == 0, err
    index = SparseIndex.load(tmp_path / "gallery")
    assert [item["id"] for item in index.items] == KEPT
    a, b, c, d = index.items
    assert a["author"] == "Jane & Doe" and a["license"] == "CC BY-SA 4.0"
    assert a["license_url"] == "https://creativecommons.org/licenses/by-sa/4.0"
    assert a["source"] == f"{server.host}/wiki/File:Buffalo_A.jpg" and a["image"] == server.host + thumb_path(KEPT[0])
    assert a["captions"] == ["Water buffalo bathing in a river <script>"]
    assert a["credit"] == (f"File:Buffalo A.jpg by Jane & Doe, CC BY-SA 4.0 (https://creativecommons.org/licenses/"
                           f"by-sa/4.0), via 127.0.0.1 ({a['source']})")
    assert b["author"] == "unknown author (see the file page)" and b["captions"] == ["Buffalo B"]
    assert b["license_url"] == "" and c["license"] == "Public domain"
    assert d["attribution"] == "Photo: Ravi K. / Flickr" and d["credit"].startswith("File:Buffalo D.jpg by Photo: Ravi")
    assert index.thumbnails.count == 4
    assert index.picture(0) == thumbnail_of(images[thumb_path(KEPT[0])])
    skipped = dict(line.strip().split(": ", 1) for line in err.splitlines() if line.startswith("  File:"))
    assert skipped["File:Logo.jpg"].startswith("not free (licence: Fair use)")
    assert skipped["File:Buffalo video.webm"] == "not an image (video/webm)"
    assert skipped["File:Huge.tif"].startswith("too large (20000 x 10000 pixels")
    assert skipped["File:Gone.jpg"].startswith("its picture could not be had: ") and "HTTP 404" in skipped["File:Gone.jpg"]
    assert len(skipped) == 4
    assert server.most_in_flight == 1
    assert server.agents and all(CONTACT in agent and agent.startswith("mlsr/") for agent in server.agents)
    assert all(params["maxlag"] == "5" and params["format"] == "json" for params in server.api_requests)
    assert server.answered_at[1] - server.answered_at[0] >= 1.0  # Retry-After honoured
    assert any("cmcontinue" in params for params in server.api_requests)  # continuation followed
    assert server.api_requests[4] == server.api_requests[5]  # the lagged answer's request asked again, as it was
    assert len(server.api_requests) == 9  # 5 category answers, 1 information answer, 3 asked again
    assert "9 API requests" in out
    allowed = {thumb_path(title) for title in KEPT} | {"/images/thumb/gone.jpg"}
    assert set(server.media_requests) == allowed  # nothing but the URLs the answers gave; non-free never fetched
    assert time.monotonic() - started < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery", "wiki"]  # no journal, pictures or batches left


def test_sigkill_after_the_answers_resumes_without_asking_again(wiki, models, tmp_path):
    """Killed after the second kept thumbnail: no index; the re-run asks the API nothing again (listing and image
    information kept), fetches only the pictures still missing, and writes the index an uninterrupted run writes."""
    folder, images = wiki
    out = tmp_path / "gallery"
    with mediawiki(folder, images) as server:
        killed = run_cli(build_args(server.url, out, models), kill_at="picture-saved:2")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert not out.exists()
        first_api, first_media = len(server.api_requests), list(server.media_requests)
        done = run_cli(build_args(server.url, out, models))
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(server.api_requests) == first_api  # nothing asked again
        again = server.media_requests[len(first_media):]
        assert len(again) == len(set(again)) and len(again) <= len(first_media) - 2 + 3
        assert "resumed an interrupted run: 1 API answers and 2 thumbnails" in done.stderr
        reference = run_cli(build_args(server.url, tmp_path / "reference", models))
        assert reference.returncode == 0, reference.stderr[-2000:]
    resumed, fresh = SparseIndex.load(out), SparseIndex.load(tmp_path / "reference")
    assert resumed.items == fresh.items and [i["id"] for i in resumed.items] == KEPT
    np.testing.assert_array_equal(resumed.vectors.toarray(), fresh.vectors.toarray())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery", "reference", "wiki"]


def test_a_file_list_and_add_with_a_licence_filter(wiki, models, tmp_path, capsys):
    """`--commons-files` takes titles (any spelling); `add` appends others with the index's own models; a licence
    filter keeps CC0 only; a file the index holds is refused unless --replace."""
    folder, images = wiki
    (tmp_path / "titles.txt").write_text("# my picks\nFile:Buffalo_C.jpg\n\nBuffalo D.jpg\n")
    (tmp_path / "more.txt").write_text("File:Buffalo B.png\nFile:Buffalo A.jpg\n")
    with mediawiki(folder, images) as server:
        common = ["--commons-api", server.url, "--contact", CONTACT]
        assert main(["build-index", "--commons-files", str(tmp_path / "titles.txt"), *common,
                     "--out", str(tmp_path / "g"), *models]) == 0
        assert [i["id"] for i in SparseIndex.load(tmp_path / "g").items] == ["File:Buffalo C.jpg", "File:Buffalo D.jpg"]
        capsys.readouterr()
        assert main(["add", "--index", str(tmp_path / "g"), "--commons-files", str(tmp_path / "more.txt"),
                     "--licenses", "CC0", *common, *models[:-2]]) == 0
        err = capsys.readouterr().err
        assert "File:Buffalo A.jpg: licence CC BY-SA 4.0 is not among CC0" in err
        assert [i["id"] for i in SparseIndex.load(tmp_path / "g").items] == [
            "File:Buffalo C.jpg", "File:Buffalo D.jpg", "File:Buffalo B.png"]
        assert main(["add", "--index", str(tmp_path / "g"), "--commons-files", str(tmp_path / "titles.txt"),
                     *common, *models[:-2]]) == 2
        assert "in the index already" in capsys.readouterr().err


def test_refusals_are_one_line(tmp_path, models, capsys):
    """A bad licence list, a file list without titles, an address that is not a URL: one line, exit 2."""
    (tmp_path / "empty.txt").write_text("# nothing\n")
    cases = [(["--commons", CATEGORY, "--licenses", "CC-BY-NC"], "licences must be"),
             (["--commons-files", str(tmp_path / "empty.txt")], "names no file"),
             (["--commons", CATEGORY, "--commons-api", "ftp://x/api.php"], "http(s) URL")]
    for extra, message in cases:
        assert main(["build-index", *extra, "--out", str(tmp_path / "g"), *models]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_licence_reading():
    assert [_licence_family(name) for name in ("CC BY-SA 3.0", "CC-BY-4.0", "cc0", "Public domain", "PD-old",
                                              "CC BY-NC 2.0", "GFDL", "Fair use", "")] == \
        ["CC-BY-SA", "CC-BY", "CC0", "PD", "PD", "", "GFDL", "", ""]
    assert parse_licences("cc0, cc-by") == {"CC0", "CC-BY"} and parse_licences("any") is None
    with pytest.raises(InputError):
        parse_licences("CC-BY-NC")
    assert plain("<p>a &amp;lt;b&amp;gt; <br>c</p>") == "a &lt;b&gt; c"
    assert file_title("image:water_buffalo.jpg") == "File:Water buffalo.jpg"


def run_cli(args: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "mlsr", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_search_with_a_licence_filter_finds_only_those_and_carries_the_credit(wiki, backbone_dir, app_head_dir,
                                                                              tokenizer_dir, tmp_path, capsys):
    """`search --licenses` keeps only the items under those licences, searching deeper when the best are others;
    each hit carries its credit and source. (The planted head: every text shares terms with every image.)"""
    models = ["--backbone", str(backbone_dir), "--head", str(app_head_dir), "--tokenizer", str(tokenizer_dir),
              "--device", "cpu", "--batch-size", "2"]
    folder, images = wiki
    with mediawiki(folder, images) as server:
        assert main(build_args(server.url, tmp_path / "g", models)) == 0
    capsys.readouterr()
    for spec, expected in (("CC0", {"File:Buffalo B.png"}), ("PD,CC-BY", {"File:Buffalo C.jpg", "File:Buffalo D.jpg"}),
                           ("CC-BY-SA,CC0", {"File:Buffalo A.jpg", "File:Buffalo B.png"})):
        assert main(["search", "water buffalo", "--index", str(tmp_path / "g"), "-k", "2", "--json",
                     "--licenses", spec, *models[:-2]]) == 0
        hits = json.loads(capsys.readouterr().out)["results"]
        assert {hit["id"] for hit in hits} == expected, spec
        assert all(hit["credit"].startswith(hit["id"]) and hit["source"].endswith(hit["id"].replace(" ", "_"))
                   for hit in hits)
    unfiltered = SparseIndex.load(tmp_path / "g")
    assert len(unfiltered) == 4


def test_pictures_come_only_from_the_urls_the_api_gave(wiki, models, tmp_path, capsys):
    """A thumbnail URL that redirects elsewhere on the same host is refused (the allow-list is the API's exact URLs,
    not its host); one that redirects to another URL the API gave is followed."""
    folder, images = wiki
    images = dict(images)
    d_path, a_path = thumb_path("File:Buffalo D.jpg"), thumb_path("File:Buffalo A.jpg")
    images[d_path] = "{HOST}/elsewhere/d.png"
    images["/elsewhere/d.png"] = images[a_path]
    images[thumb_path("File:Buffalo C.jpg")] = "{HOST}" + a_path
    with mediawiki(folder, images) as server:
        assert main(build_args(server.url, tmp_path / "g", models)) == 0
        err = capsys.readouterr().err
    assert "File:Buffalo D.jpg: its picture could not be had: " in err and "redirects to" in err
    assert "/elsewhere/d.png" not in server.media_requests
    index = SparseIndex.load(tmp_path / "g")
    assert [item["id"] for item in index.items] == ["File:Buffalo A.jpg", "File:Buffalo B.png", "File:Buffalo C.jpg"]


def test_the_loopback_wiki_sees_two_requests_sent_at_once(wiki):
    """The 'one request at a time' checks can fail: two clients asking together are counted in flight together."""
    import threading
    import urllib.request

    folder, images = wiki
    with mediawiki(folder, images, delay=0.5) as handle:
        asks = [threading.Thread(target=lambda: urllib.request.urlopen(f"{handle.url}?action=query", timeout=30).read())
                for _ in range(2)]
        for ask in asks:
            ask.start()
        for ask in asks:
            ask.join()
    assert handle.most_in_flight == 2
