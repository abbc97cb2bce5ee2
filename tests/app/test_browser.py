"""The real UI in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): suggest, explain a
hit, image -> terms. Screenshots are saved to tests/artifacts/. Never skipped: CI installs Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.helpers.data import REAL_IMAGES, ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
ARTICLE = (ROOT / "assets" / "examples" / "water-buffalo.txt").read_text()


@pytest.fixture(scope="module")
def page(app_url):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`).")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(app_url, wait_until="load")
        page.wait_for_selector("#article-text textarea")
        yield page
        browser.close()


def test_suggest_shows_k_images_and_highlighted_terms(page):
    page.locator("#article-text textarea").fill(ARTICLE)
    page.locator("#k-slider input[type=number]").fill("5")
    page.locator("#k-slider input[type=number]").press("Enter")
    page.locator("#suggest-button").click()
    expect(page.locator("#results-gallery img")).to_have_count(5)
    expect(page.locator("#suggest-timing")).to_contain_text("5 images")
    # the planted terms carry weight: their words are shaded in the highlighted copy of the text
    highlighted = page.locator("#query-highlight [style*='background']", has_text="buffalo")
    expect(highlighted.first).to_be_visible()
    expect(page.locator("#expansion-terms")).to_contain_text("Expansion terms")
    page.screenshot(path=str(ARTIFACTS / "suggest.png"), full_page=True)


def test_selecting_a_result_shows_why_it_ranked(page):
    page.locator("#results-gallery img").first.click()
    table = page.locator("#matched-terms")
    expect(table).to_be_visible()
    expect(table).to_contain_text("buffalo")
    expect(page.locator("#why-row")).to_contain_text("the sum of the contributions")
    expect(page.locator("#hit-terms")).to_contain_text("market")
    page.screenshot(path=str(ARTIFACTS / "explain.png"), full_page=True)


def test_uploading_an_image_shows_its_terms(page):
    page.get_by_role("tab", name="Image → terms").click()
    page.locator("#image-input input[type=file]").set_input_files(str(REAL_IMAGES / "COCO_val2014_000000184613.jpg"))
    expect(page.locator("#image-chips")).to_contain_text("buffalo")
    expect(page.locator("#image-summary")).to_contain_text("active terms")
    expect(page.locator("#similar-gallery img").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "image-terms.png"), full_page=True)


def test_sparse_vs_dense_and_about(page):
    page.get_by_role("tab", name="Sparse vs dense").click()
    page.locator("#compare-text textarea").fill("a woman cutting a cake")
    page.locator("#compare-button").click()
    expect(page.locator("#compare-summary")).to_contain_text("overlap@10")
    expect(page.locator("#dense-gallery img").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
    page.get_by_role("tab", name="About this index").click()
    expect(page.locator("#about-text")).to_contain_text("10 images")
    page.screenshot(path=str(ARTIFACTS / "about.png"), full_page=True)
