"""A Commons gallery in the real UI (headless Chromium): a result's credit and licence link are visible, and a
section whose best image scores below the minimum shows "No good match" instead of a picture."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from mlsr.ingest.commons import WikiSelection, build_wiki_index
from mlsr.ingest.mediawiki import MediaWikiApi
from tests.app.test_browser import browser, open_page  # noqa: F401 (the module's Chromium fixture)
from tests.helpers.app import start_app
from tests.helpers.mediawiki import mediawiki
from tests.ingest.test_commons import CATEGORY, wiki  # noqa: F401 (the recorded wiki fixture)

ARTICLE = """# Water buffalo

## Habitat

Water buffalo bathing in a river.

## Farming

A buffalo ploughing a paddy field.
"""
LICENCE = "https://creativecommons.org/licenses/by-sa/4.0"


@pytest.fixture
def commons_app(wiki, app_encoder, backbone_dir, app_head_dir, tokenizer_dir, tmp_path):  # noqa: F811
    folder, images = wiki
    with mediawiki(folder, images) as server:
        build_wiki_index(app_encoder, WikiSelection(categories=(CATEGORY,), depth=1), out=tmp_path / "gallery",
                         api=MediaWikiApi(server.url, "tests@example.org"))
    process, url = start_app(["--index", str(tmp_path / "gallery"), "--backbone", str(backbone_dir), "--head",
                              str(app_head_dir), "--tokenizer", str(tokenizer_dir)], tmp_path / "app.log")
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_credit_licence_link_and_no_good_match(browser, commons_app):  # noqa: F811
    page = open_page(browser, commons_app)
    page.get_by_role("tab", name="Article").click()
    page.locator("#article-input textarea").fill(ARTICLE)
    page.locator("#article-button").click()
    why = page.locator("#article-why-0")
    expect(why).to_contain_text("Credit:")
    expect(why).to_contain_text("licence:")
    links = why.locator("a")
    expect(links.first).to_be_visible()
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert any(href.startswith(("http://127.0.0.1", "https://creativecommons.org")) for href in hrefs), hrefs
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.locator("#article-min-score input").fill("1000000")  # the same page again: galleries give way to notes
    page.locator("#article-button").click()
    for number in range(2):
        expect(page.locator(f"#article-nomatch-{number}")).to_contain_text("No good match", timeout=60_000)
        expect(page.locator(f"#article-nomatch-{number}")).to_contain_text("strongest shared terms")
        expect(page.locator(f"#article-gallery-{number}")).to_have_count(0)
    assert errors == []
    page.close()


def test_suggest_shows_the_credit_and_filters_by_licence(browser, commons_app):  # noqa: F811
    page = open_page(browser, commons_app)
    page.locator("#article-text textarea").fill("Water buffalo bathing in a river.")
    page.locator("#suggest-button").click()
    gallery = page.locator("#results-gallery")
    expect(gallery.locator("img")).to_have_count(4, timeout=60_000)
    expect(gallery).to_contain_text("CC BY-SA 4.0")
    gallery.locator("img").first.click()
    why = page.locator("#why-row")
    expect(why).to_contain_text("Credit:", timeout=60_000)
    expect(why.locator(f'a[href="{LICENCE}"], a[href^="http://127.0.0.1"]').first).to_be_visible()
    page.locator("#licence-filter label", has_text="CC0").click()
    page.locator("#suggest-button").click()
    expect(gallery.locator("img")).to_have_count(1, timeout=60_000)
    expect(gallery).to_contain_text("CC0")
    page.locator("#suggest-min-score input").fill("1000000")
    page.locator("#suggest-button").click()
    expect(page.locator("#suggest-timing")).to_contain_text("No good match", timeout=60_000)
    expect(page.locator("#suggest-timing")).to_contain_text("strongest shared terms")
    expect(gallery.locator("img")).to_have_count(0)
    page.close()
