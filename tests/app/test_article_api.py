"""Article mode and the app's other new answers through its API (`gradio_client`) and its MCP tools (`mcp`)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.helpers.app import start_app
from tests.helpers.data import REAL_IMAGES
from mlsr.index.sparse import SparseIndex

ARTICLE = """# A day in the village

## Water buffalo in the fields

Children lead the water buffalo through the rice fields to the market.

## On the road to town

A man on a small motorbike rides along the dirt road.

## A wedding in the evening

A woman cuts a large white sheet cake with a knife.
"""
HIT_KEYS = {"rank", "id", "score", "image", "source", "caption", "credit", "license", "license_url", "terms"}


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False)


def test_three_sections_give_three_groups_of_explained_hits_and_no_image_twice(client):
    result = client.predict(ARTICLE, 3, True, api_name="/suggest_article")
    assert set(result) == {"sections"} and len(result["sections"]) == 3
    assert [s["title"] for s in result["sections"]] == ["Water buffalo in the fields", "On the road to town",
                                                        "A wedding in the evening"]
    ids = []
    for section in result["sections"]:
        assert set(section) == {"title", "query", "no_good_match", "results"}
        assert section["query"].startswith(f"A day in the village {section['title']} ")  # the AToMiC recipe
        assert [hit["rank"] for hit in section["results"]] == list(range(1, len(section["results"]) + 1))
        for hit in section["results"]:
            assert set(hit) == HIT_KEYS and hit["score"] > 0
            assert sum(value for _, value in hit["terms"]) == pytest.approx(hit["score"], abs=2e-3)
            ids.append(hit["id"])
    assert ids and len(ids) == len(set(ids))


def test_exports_and_the_minimum_score_through_the_api(client):
    """`export` adds the illustrated article ("document") in the format asked; `min_score` above every score leaves
    each section without an image, saying so with its strongest shared terms."""
    from html.parser import HTMLParser

    html = client.predict(ARTICLE, 1, True, 0.0, "html", api_name="/suggest_article")["document"]
    tags = []
    parser = type("Tags", (HTMLParser,), {"handle_starttag": lambda self, tag, attrs: tags.append(tag)})()
    parser.feed(html)
    assert tags.count("figure") == 3 and tags.count("figcaption") == 3 and html.startswith("<article>")
    wikitext = client.predict(ARTICLE, 1, True, 0.0, "wikitext", api_name="/suggest_article")["document"]
    assert "== Water buffalo in the fields ==" in wikitext
    weak = client.predict(ARTICLE, 3, True, 1e9, "none", api_name="/suggest_article")
    assert "document" not in weak
    for section in weak["sections"]:
        assert section["results"] == []
        assert section["no_good_match"].startswith("no image in this gallery matches this section well")


def test_dedupe_off_lets_the_best_images_serve_every_section(client):
    result = client.predict(ARTICLE, 3, False, api_name="/suggest_article")
    ids = [hit["id"] for section in result["sections"] for hit in section["results"]]
    assert len(ids) == 9 and len(set(ids)) < 9


@pytest.mark.parametrize("article, k, message", [
    ("", 3, "empty"), ("## Only headings\n\n## Here\n", 3, "empty"), (ARTICLE, 0, "between 1 and 10"),
    (ARTICLE, 11, "between 1 and 10"),
])
def test_bad_articles_get_a_clear_message(client, article, k, message):
    with pytest.raises(AppError, match=message):
        client.predict(article, k, True, api_name="/suggest_article")


def test_nothing_matched_is_an_empty_ranking_not_a_row_of_zeros(client, app_index):
    index = SparseIndex.load(app_index)
    frequency = index.document_frequency()
    words = [w for w in ("violin", "glacier", "telescope", "volcano") if frequency[index.vocab.ids[w]] == 0]
    found = client.predict([[word, 1.0] for word in words], 12, api_name="/search_terms")
    assert found["results"] == [] and found["active_terms"] == len(words)


def test_every_bar_chart_starts_at_zero(client):
    plots = [c for c in client.config["components"] if c["type"] == "nativeplot"]  # BarPlot
    assert len(plots) >= 3
    for plot in plots:
        assert plot["props"]["y_lim"][0] == 0, plot["props"].get("label")


def test_the_compare_screen_has_a_placeholder_and_example_queries(client):
    components = {c["props"].get("elem_id"): c for c in client.config["components"]}
    box = components["compare-text"]["props"]
    assert box["placeholder"] and box["lines"] == 1  # one line: Enter submits
    samples = [c for c in client.config["components"] if c["type"] == "dataset"]
    assert any(["a woman cutting a cake"] in c["props"]["samples"] for c in samples)


def test_the_offline_page_guides_and_its_api_says_why(app_args, tmp_path):
    args = list(app_args)
    args[args.index("--index") + 1] = str(tmp_path / "no-index-here")
    process, url = start_app(args, tmp_path / "app.log")
    try:
        offline = Client(url, verbose=False)
        text = str(offline.config)
        for needed in ("What the app needs", "--backbone", "Hub cache", "build-index --images"):
            assert needed in text, needed
        assert "hf download" not in text  # every model here is a local folder: nothing to download
        assert "/status" in offline.view_api(print_info=False, return_format="dict")["named_endpoints"]
        status = offline.predict(api_name="/status")
        assert status["ready"] is False and "no index at" in status["reason"]
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- MCP --------------------------------------------------------------------------------------------------


async def mcp_session(url: str, calls: list[tuple[str, dict]]) -> tuple[list, list]:
    """List the tools of the app's MCP server over streamable HTTP and make the given calls."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(f"{url}gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            results = [await session.call_tool(name, arguments) for name, arguments in calls]
    return tools, results


def test_mcp_tools_are_listed_described_and_answer_json_matching_their_schemas(app_url):
    """Every tool lists an output schema and answers JSON text (json.loads parses it) equal to its structured
    content, which matches that schema; hits carry absolute picture URLs on the app's own origin."""
    import base64

    import jsonschema

    image = REAL_IMAGES / "COCO_val2014_000000184613.jpg"
    data = "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()
    calls = [("suggest", {"text": "a boy leading buffalo to the market", "k": 3}),
             ("suggest_article", {"article": ARTICLE, "k": 2, "dedupe": False}),
             ("image_terms", {"image": data, "top_k": 5}),
             ("similar", {"image": data, "k": 3}),
             ("search_terms", {"terms": [["buffalo", 1.0], ["market", 0.5]], "k": 3}),
             ("compare", {"text": "a woman cutting a cake", "k": 3}),
             ("suggest", {"text": "", "k": 3})]
    tools, results = asyncio.run(mcp_session(app_url, calls))
    by_name = {tool.name: tool for tool in tools}
    assert {"suggest", "suggest_article", "image_terms", "similar", "search_terms", "compare"} <= set(by_name)
    suggest = by_name["suggest"]
    assert "1 to 100" in suggest.inputSchema["properties"]["k"]["description"]
    assert suggest.inputSchema["properties"]["k"]["type"] == "integer"
    assert suggest.inputSchema["properties"]["mode"]["enum"] == ["expand", "no_expand", "hybrid"]
    assert "AToMiC" in by_name["suggest_article"].description
    assert by_name["suggest_article"].inputSchema["properties"]["dedupe"]["type"] == "boolean"
    answers = {}
    for (name, _), result in zip(calls[:-1], results[:-1]):
        assert not result.isError, result.content[0].text
        parsed = json.loads(result.content[0].text)
        assert parsed == result.structuredContent
        jsonschema.validate(parsed, by_name[name].outputSchema)
        answers[name] = parsed
    assert len(answers["suggest"]["results"]) == 3
    assert [len(s["results"]) for s in answers["suggest_article"]["sections"]] == [2, 2, 2]
    assert len(answers["image_terms"]["terms"]) == 5
    hits = answers["suggest"]["results"] + answers["similar"]["similar"] + answers["compare"]["sparse"]
    for hit in hits:
        assert hit["image"] == f"{app_url}thumbnails/{urllib.parse.quote(hit['id'], safe='')}"
        with urllib.request.urlopen(hit["image"], timeout=30) as picture:
            assert picture.headers["Content-Type"] == "image/webp"
    empty = results[-1]
    assert empty.isError and "empty" in empty.content[0].text


def test_mcp_image_tools_refuse_urls_without_opening_a_connection(app_url):
    """An agent's URL or server path is refused before anything is fetched or read (a listening socket on loopback
    sees no connection), with one message saying what is accepted; the listed schema says the same: a string
    holding a data: URI, with none of FileData's required fields."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/photo.jpg"
        path = str(REAL_IMAGES / "COCO_val2014_000000184613.jpg")
        tools, results = asyncio.run(mcp_session(app_url, [
            ("image_terms", {"image": url, "top_k": 5}), ("similar", {"image": url, "k": 3}),
            ("image_terms", {"image": path, "top_k": 5}), ("similar", {"image": "/etc/passwd", "k": 3})]))
        for result in results:
            text = result.content[0].text
            assert result.isError and text.startswith("send the image itself as a data: URI"), text
            assert "provide a url" not in text and "not fetched" in text
        with pytest.raises(socket.timeout):
            listener.accept()
    for tool in (tool for tool in tools if tool.name in ("image_terms", "similar")):
        image = tool.inputSchema["properties"]["image"]
        assert image["type"] == "string" and image["pattern"] == "^data:" and "required" not in image, image
        assert "data: URI" in image["description"] and tool.inputSchema["required"] == ["image"]
