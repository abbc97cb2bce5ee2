"""The real UI in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): suggest, explain a
hit, image -> terms. Each test opens its own page, so none depends on what another left on screen.
Screenshots are saved to tests/artifacts/. Never skipped: CI installs Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.helpers.data import REAL_IMAGES, ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
ARTICLE = (ROOT / "assets" / "examples" / "water-buffalo.txt").read_text()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`).")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh page on the app, for one test."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(app_url, wait_until="load")
    page.wait_for_selector("#article-text textarea")
    yield page
    page.close()


def suggest(page, text: str, k: int) -> None:
    """Run the suggest screen on `text` for `k` images and wait for them."""
    page.locator("#article-text textarea").fill(text)
    page.locator("#k-slider input[type=number]").fill(str(k))
    page.locator("#k-slider input[type=number]").press("Enter")
    page.locator("#suggest-button").click()
    expect(page.locator("#results-gallery img")).to_have_count(k)


def test_suggest_shows_k_images_and_highlighted_terms(page):
    suggest(page, ARTICLE, 5)
    expect(page.locator("#suggest-timing")).to_contain_text("5 images")
    # the planted terms carry weight: their words are shaded in the highlighted copy of the text
    highlighted = page.locator("#query-highlight [style*='background']", has_text="buffalo")
    expect(highlighted.first).to_be_visible()
    expect(page.locator("#expansion-terms")).to_contain_text("Expansion terms")
    page.screenshot(path=str(ARTIFACTS / "suggest.png"), full_page=True)


def test_selecting_a_result_shows_why_it_ranked(page):
    suggest(page, ARTICLE, 3)
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
    expect(page.locator("#about-text")).to_contain_text("9 images")
    page.screenshot(path=str(ARTIFACTS / "about.png"), full_page=True)


def test_an_unreadable_photo_shows_the_placeholder_not_an_error(page, app_args, app_index, tmp_path):
    """One indexed photo the server may not read: every search still answers, that photo as the placeholder."""
    import shutil

    from tests.helpers.app import start_app
    from tests.helpers.refusals import make_unreadable, unprivileged

    shutil.copytree(app_index.parent, tmp_path / "gallery")  # the index and its photos, which it names relatively
    make_unreadable(tmp_path / "gallery" / "photos" / "bus.jpg")
    args = list(app_args)
    args[args.index("--index") + 1] = str(tmp_path / "gallery" / "index")
    process, url = start_app(args, tmp_path / "app.log", wrap=unprivileged)
    other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})  # the module's browser
    try:
        other.set_default_timeout(60_000)
        other.goto(url, wait_until="load")
        other.locator("#article-text textarea").fill("a red bus parked on a city street")
        other.locator("#k-slider input[type=number]").fill("9")
        other.locator("#k-slider input[type=number]").press("Enter")
        other.locator("#suggest-button").click()
        expect(other.locator("#results-gallery img")).to_have_count(9)
        sources = [img.get_attribute("src") for img in other.locator("#results-gallery img").all()]
        assert sum("missing" in (src or "") for src in sources) == 1  # the unreadable one, and only it
        expect(other.locator(".toast-body")).to_have_count(0)
        other.screenshot(path=str(ARTIFACTS / "unreadable-photo.png"), full_page=True)
    finally:
        other.close()
        process.terminate()
        process.wait(timeout=30)
        (tmp_path / "gallery" / "photos" / "bus.jpg").chmod(0o644)
    assert "Traceback" not in (tmp_path / "app.log").read_text()
