"""The real UI in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): each test opens its own
page, so none depends on what another left on screen. Screenshots are saved to tests/artifacts/ (article.png and
phone.png are the README's). Never skipped: CI installs Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from mlsr.index.sparse import SparseIndex
from tests.helpers.data import MARKUP_CAPTION, REAL_IMAGES, ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
PASSAGE = (ROOT / "assets" / "examples" / "water-buffalo.txt").read_text()
ARTICLE = """# A day in the village

## Water buffalo in the fields

Children lead the water buffalo through the rice fields to the market.

## On the road to town

A man on a small motorbike rides along the dirt road.

## A wedding in the evening

A woman cuts a large white sheet cake with a knife.
"""
PHONE = {"width": 390, "height": 844}


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


def open_page(browser, app_url, viewport=None):
    page = browser.new_page(viewport=viewport or {"width": 1400, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(60_000)
    page.goto(app_url, wait_until="load")
    page.wait_for_selector("#article-text textarea")
    return page


@pytest.fixture
def page(browser, app_url):
    page = open_page(browser, app_url)
    yield page
    page.close()


@pytest.fixture
def phone(browser, app_url):
    page = open_page(browser, app_url, PHONE)
    yield page
    page.close()


def suggest(page, text: str = PASSAGE, k: int | None = None) -> None:
    page.locator("#article-text textarea").fill(text)
    if k is not None:
        page.locator("#k-slider input[type=number]").fill(str(k))
        page.locator("#k-slider input[type=number]").press("Enter")
    page.locator("#suggest-button").click()


def test_suggest_shows_k_images_and_highlighted_terms(page):
    suggest(page, k=5)
    expect(page.locator("#results-gallery img")).to_have_count(5)
    expect(page.locator("#suggest-timing")).to_contain_text("5 images")
    # the planted terms carry weight: their words are shaded in the highlighted copy of the text
    highlighted = page.locator("#query-highlight [style*='background']", has_text="buffalo")
    expect(highlighted.first).to_be_visible()
    expect(page.locator("#expansion-terms")).to_contain_text("Expansion terms")
    expect(page.locator("#licence-filter")).to_be_hidden()  # COCO photos record no licence: nothing to filter by
    page.screenshot(path=str(ARTIFACTS / "suggest.png"), full_page=True)


def test_selecting_a_result_shows_why_it_ranked_and_more_like_it(page):
    suggest(page, k=5)
    page.locator("#results-gallery img").first.click()
    table = page.locator("#matched-terms")
    expect(table).to_be_visible()
    expect(table).to_contain_text("buffalo")
    expect(page.locator("#why-row")).to_contain_text("the sum of the products")
    expect(page.locator("#hit-terms")).to_contain_text("market")
    # the selected image at full size, from the app's own origin, with its download and full-screen buttons
    picture = page.locator("#why-picture img")
    expect(picture).to_be_visible()
    assert picture.get_attribute("src").startswith(page.url.rstrip("/"))
    expect(page.locator("#why-picture").get_by_label("Download")).to_be_visible()
    expect(page.locator("#why-picture").get_by_label("Fullscreen")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "explain.png"), full_page=True)
    page.locator("#more-like-this").click()
    expect(page.locator("#suggest-timing")).to_contain_text("images like #1")
    assert "images images" not in page.locator("#suggest-timing").inner_text()
    expect(page.locator("#results-gallery img")).to_have_count(5)
    # the text stays, but its label and the panel beside it say what the query is now: image #1's own terms
    expect(page.locator("#article-text")).to_contain_text("the results are like #1, not this text")
    expect(page.locator("#query-highlight")).to_contain_text("image #1's own terms")
    expect(page.locator("#query-highlight")).to_contain_text("market")
    page.locator("#results-gallery img").nth(1).click()  # the explanation works from the image's own vector
    expect(page.locator("#why-row")).to_contain_text("#2")


def test_article_mode_end_to_end(page, tmp_path):
    page.get_by_role("tab", name="Article").click()
    page.locator("#article-input textarea").fill(ARTICLE)
    plan = page.locator("#article-plan")
    expect(plan).to_contain_text("3 sections")
    expect(plan).to_contain_text("page title: A day in the village")
    page.locator("#article-join label", has_text="On the road to town").click()  # join, then split again
    expect(plan).to_contain_text("2 sections")
    page.locator("#article-join label", has_text="On the road to town").click()
    expect(plan).to_contain_text("3 sections")
    page.locator("#article-collapse input").uncheck()
    page.locator("#article-button").click()
    for number in range(3):
        expect(page.locator(f"#article-gallery-{number} img")).to_have_count(3)
    expect(page.locator("#article-summary")).to_contain_text("9 images for 3 sections")
    second = page.locator("#article-gallery-0 .caption-label").nth(1).inner_text()
    page.locator("#article-gallery-0 img").nth(1).click()
    expect(page.locator("#article-why-0")).to_contain_text("#2")
    expect(page.locator("#article-terms-0")).to_contain_text("buffalo")
    page.locator("#article-choose-0").click()
    expect(page.locator("#article-chosen-0")).to_contain_text("#2")
    page.locator("#article-none-1").click()
    expect(page.locator("#article-chosen-1")).to_contain_text("no image")
    page.screenshot(path=str(ARTIFACTS / "article.png"), full_page=True)
    with page.expect_download() as download:
        page.locator("#article-download").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "a-day-in-the-village-illustrated.md"
    lines = saved.read_text(encoding="utf-8").splitlines()
    images = [n for n, line in enumerate(lines) if line.startswith("![")]
    assert len(images) == 2  # section 2 has none
    assert lines[images[0] - 2] == "## Water buffalo in the fields"
    assert lines[images[0]].startswith(f"![{second.split(' · ', 2)[2]}](")
    assert lines[images[1] - 2] == "## A wedding in the evening"
    assert [line for line in lines if line.startswith("#")] == [line for line in ARTICLE.splitlines()
                                                               if line.startswith("#")]


def test_a_phone_sees_every_result_and_every_tab(phone):
    tabs = phone.get_by_role("tab")
    expect(tabs).to_have_count(5)
    for n in range(5):
        expect(tabs.nth(n)).to_be_in_viewport()
    assert len({round(tabs.nth(n).bounding_box()["y"]) for n in range(5)}) == 1  # one row of tabs
    expect(phone.get_by_label("More tabs")).to_have_count(0)
    suggest(phone, k=10)
    thumbnails = phone.locator("#results-gallery img")
    expect(thumbnails).to_have_count(10)
    width = phone.evaluate("document.documentElement.clientWidth")
    assert phone.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    for n in range(10):
        box = thumbnails.nth(n).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (n, box)
    phone.evaluate("window.scrollTo(0, document.querySelector('#results-gallery').getBoundingClientRect().top"
                   " + window.scrollY - 300)")
    phone.screenshot(path=str(ARTIFACTS / "phone.png"))  # the README's: results in two columns at 390 px
    thumbnails.first.click()
    headers = phone.locator("#matched-terms th")
    expect(headers.last).to_contain_text("product")
    one_line = phone.locator("#matched-terms th span").first.bounding_box()["height"]
    for n in range(headers.count()):
        box = headers.nth(n).bounding_box()
        assert box["x"] + box["width"] <= width + 1, (headers.nth(n).inner_text(), box)
        text = headers.nth(n).locator("span").first.bounding_box()
        assert text["height"] <= one_line + 1, (headers.nth(n).inner_text(), text)  # no header breaks a word


def test_an_error_replaces_the_results_instead_of_covering_them(page):
    suggest(page, k=4)
    expect(page.locator("#results-gallery img")).to_have_count(4)
    suggest(page, "   ")
    expect(page.locator("#suggest-timing")).to_contain_text("text is empty")
    expect(page.locator("#suggest-timing")).not_to_contain_text("images ·")
    expect(page.locator("#results-gallery img")).to_have_count(0)
    expect(page.locator("#results-gallery")).not_to_contain_text("Error")


def test_a_long_text_scrolls_in_its_own_box(page):
    suggest(page, "The buffalo walks to the market. " * 580, k=3)  # about 19,000 characters
    expect(page.locator("#results-gallery img")).to_have_count(3, timeout=120_000)
    box = page.locator("#query-highlight").bounding_box()
    assert box["height"] < 420
    assert page.locator("#results-gallery").bounding_box()["y"] < 1600


def test_an_example_passage_runs_at_once(page):
    suggest(page, "a woman cutting a cake", k=3)
    expect(page.locator("#suggest-timing")).to_contain_text("3 images")
    page.get_by_role("button", name="city trams").click()
    expect(page.locator("#query-highlight")).to_contain_text("tram")
    expect(page.locator("#query-highlight")).not_to_contain_text("woman cutting")
    expect(page.locator("#suggest-timing")).to_contain_text("3 images")


def test_captions_and_ids_show_as_text(page):
    suggest(page, k=10)
    odd = page.locator("#results-gallery .gallery-item", has_text="not bold")
    expect(odd).to_have_count(1)
    odd.locator("img").click()
    why = page.locator("#why-row")
    expect(why).to_contain_text(MARKUP_CAPTION)
    expect(why.locator("img")).to_have_count(1)  # the picture itself, not one made from the caption's markup
    expect(page.locator("#why-picture img")).to_have_count(1)
    expect(why.locator("a[href='http://example.com']")).to_have_count(0)


def test_nothing_matched_says_so(page, app_index):
    index = SparseIndex.load(app_index)
    frequency = index.document_frequency()
    words = [w for w in ("violin", "glacier", "telescope", "volcano") if frequency[index.vocab.ids[w]] == 0]
    page.locator("#article-text textarea").fill(" ".join(words))
    page.get_by_label("no_expand").check()  # only the text's own words, which no indexed image has
    page.locator("#suggest-button").click()
    expect(page.locator("#suggest-timing")).to_contain_text("Nothing matched")
    expect(page.locator("#results-gallery img")).to_have_count(0)


def test_uploading_images_encodes_each_once(page):
    joins = []
    def joined(request) -> None:  # queue joins that carry an image: each is one run of the image encoder
        if "queue/join" in request.url and "COCO_val2014" in (request.post_data or ""):
            joins.append(request.post_data)

    page.on("request", joined)
    page.get_by_role("tab", name="Image", exact=True).click()
    upload = page.locator("#image-input input[type=file]")
    upload.set_input_files(str(REAL_IMAGES / "COCO_val2014_000000184613.jpg"))
    expect(page.locator("#image-chips")).to_contain_text("buffalo")
    expect(page.locator("#image-summary")).to_contain_text("active terms")
    expect(page.locator("#similar-gallery img").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "image-terms.png"), full_page=True)
    assert len(joins) == 1
    chips = page.locator("#image-chips .token")
    shown = chips.count()
    slider = page.locator("#image-top-k input[type=number]")
    slider.fill("40")
    slider.press("Enter")
    page.locator("#image-top-k input[type=range]").dispatch_event("pointerup")  # the slider's release
    expect(chips).not_to_have_count(shown)
    assert len(joins) == 1  # re-sliced on the page's server side, no second encoding
    page.locator("#image-input button[aria-label='Remove Image']").click()
    expect(page.locator("#image-summary")).not_to_contain_text("active terms")  # cleared with the image
    upload.set_input_files(str(REAL_IMAGES / "COCO_val2014_000000391895.jpg"))
    expect(page.locator("#image-summary")).to_contain_text("active terms")
    assert len(joins) == 2


def test_a_similar_image_explains_itself_and_searches_on(page):
    page.get_by_role("tab", name="Image", exact=True).click()
    page.locator("#image-input input[type=file]").set_input_files(str(REAL_IMAGES / "COCO_val2014_000000184613.jpg"))
    page.locator("#similar-gallery img").nth(1).click()
    expect(page.locator("#similar-why")).to_contain_text("the sum of the products")
    expect(page.locator("#similar-shared")).to_contain_text("buffalo")
    page.locator("#similar-more").click()
    expect(page.locator("#image-summary")).to_contain_text("Images like #2")
    expect(page.locator("#similar-gallery img").first).to_be_visible()


def test_a_bad_upload_shows_one_message(page, tmp_path):
    (tmp_path / "notes.jpg").write_bytes(b"this is not an image")
    page.get_by_role("tab", name="Image", exact=True).click()
    page.locator("#image-input input[type=file]").set_input_files(str(tmp_path / "notes.jpg"))
    expect(page.locator("#image-summary")).to_contain_text("not an image")
    expect(page.locator("body")).not_to_contain_text("Error (2)")


def test_sparse_vs_dense_on_enter_and_about(page):
    page.get_by_role("tab", name="Compare").click()
    box = page.locator("#compare-text textarea, #compare-text input").first
    expect(box).to_have_attribute("placeholder", "e.g. a woman cutting a cake")
    box.fill("a woman cutting a cake")
    box.press("Enter")
    expect(page.locator("#compare-summary")).to_contain_text("overlap@10")
    expect(page.locator("#dense-gallery img").first).to_be_visible()
    assert "-0.00" not in page.locator("#dense-gallery").inner_text()
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
    page.get_by_role("tab", name="About").click()
    expect(page.locator("#about-text")).to_contain_text("10 images")
    page.screenshot(path=str(ARTIFACTS / "about.png"), full_page=True)


def test_an_unreadable_photo_shows_the_placeholder_not_an_error(page, app_args, app_index, tmp_path):
    """An index made before indexes kept their pictures, one of whose photos the server may not read: the app
    makes the others' pictures on first display, every search still answers, that photo as the placeholder."""
    import shutil

    from tests.helpers.app import start_app
    from tests.helpers.refusals import make_unreadable, unprivileged

    shutil.copytree(app_index.parent, tmp_path / "gallery")  # the index and its photos, which it names relatively
    older = SparseIndex.load(tmp_path / "gallery" / "index")
    older.thumbnails = None  # as saved before thumbnails
    older.save(tmp_path / "gallery" / "index")
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


@pytest.mark.parametrize("viewport", [PHONE, {"width": 1400, "height": 1000}], ids=["phone", "desktop"])
def test_a_refused_term_table_is_said_beside_it_and_the_results_stay(browser, app_url, viewport):
    """A weight out of range in the edited query: the message appears under the table, in view where the user is
    editing (not in the status line at the top), and the last results stay."""
    page = open_page(browser, app_url, viewport)
    try:
        suggest(page, k=3)
        expect(page.locator("#results-gallery img")).to_have_count(3)
        page.locator("#edit-terms").get_by_text("Edit the query's terms").click()
        cell = page.locator("#term-table [role=gridcell]:visible").nth(1)  # the first term's weight
        cell.dblclick()
        page.keyboard.press("Control+A")
        page.keyboard.type("1000")
        page.keyboard.press("Enter")
        page.locator("#search-edited").click()
        status = page.locator("#term-table-status")
        expect(status).to_contain_text("weight")
        expect(status).to_be_in_viewport()
        expect(page.locator("#results-gallery img")).to_have_count(3)  # the last results stay
        page.screenshot(path=str(ARTIFACTS / f"term-table-refused-{viewport['width']}.png"), full_page=False)
    finally:
        page.close()


def test_an_article_file_that_is_not_utf8_says_so_and_keeps_the_text(page, tmp_path):
    """The specific message reaches the page (no bare "Error"), in the plan under the article; the text stays."""
    page.get_by_role("tab", name="Article").click()
    page.locator("#article-input textarea").fill(ARTICLE)
    expect(page.locator("#article-plan")).to_contain_text("3 sections")
    latin1 = tmp_path / "café.md"
    latin1.write_bytes("# Café\n\nUn café crème à la terrasse.".encode("latin-1"))
    page.locator("#article-upload input[type=file], input[type=file]").last.set_input_files(str(latin1))
    expect(page.locator("#article-plan")).to_contain_text("could not be read as UTF-8")
    expect(page.locator("#article-input textarea")).to_have_value(ARTICLE)
    expect(page.locator(".toast-body")).to_have_count(0)


def test_after_suggest_on_a_phone_the_first_result_is_in_view(phone):
    suggest(phone, k=3)
    expect(phone.locator("#results-gallery img")).to_have_count(3)
    expect(phone.locator("#results-gallery img").first).to_be_in_viewport()


@pytest.mark.parametrize("viewport", [PHONE, {"width": 1400, "height": 1000}], ids=["phone", "desktop"])
def test_the_gallery_label_and_captions_leave_the_pictures_uncovered(browser, app_url, viewport):
    page = open_page(browser, app_url, viewport)
    try:
        suggest(page, k=4)
        pictures = page.locator("#results-gallery img")
        expect(pictures).to_have_count(4)
        top = pictures.first.bounding_box()["y"] + 0.5
        for above in ("[data-testid=block-label]", ".top-panel"):  # the label, and the "download" button
            box = page.locator(f"#results-gallery {above}").bounding_box()
            assert box["height"] > 0 and box["y"] + box["height"] <= top, (above, box)
        button = page.locator("#results-gallery .top-panel button").bounding_box()  # not clipped: it takes clicks
        assert page.evaluate("([x, y]) => !!document.elementFromPoint(x, y)?.closest('.top-panel')",
                             [button["x"] + button["width"] / 2, button["y"] + button["height"] / 2])
        for n in range(4):
            picture = pictures.nth(n).bounding_box()
            caption = page.locator("#results-gallery .caption-label").nth(n).bounding_box()
            assert caption["y"] >= picture["y"] + picture["height"] - 0.5, (n, picture, caption)
            assert picture["height"] >= 0.9 * picture["width"], (n, picture)  # still a square picture
        page.locator("#results-gallery").screenshot(path=str(ARTIFACTS / f"gallery-{viewport['width']}.png"))
    finally:
        page.close()


def test_a_term_is_added_with_its_own_control_to_a_fixed_two_column_table(page):
    """"Add" puts a checked term at the top of the table; a term already there is refused under the table and the
    table stays; the table has two columns and no way to add or delete one; word pieces are explained."""
    suggest(page, k=3)
    expect(page.locator("#results-gallery img")).to_have_count(3)
    page.locator("#edit-terms").get_by_text("Edit the query's terms").click()
    expect(page.locator("#edit-terms")).to_contain_text("word pieces")
    first_term = page.locator("#term-table [role=gridcell]:visible").first.inner_text().strip()
    page.locator("#new-term textarea, #new-term input").first.fill("harbour")
    page.locator("#new-term-weight input").fill("2")
    page.locator("#add-term").click()
    expect(page.locator("#term-table-status")).to_contain_text("added harbour")
    expect(page.locator("#term-table [role=gridcell]:visible").first).to_have_text("harbour")
    expect(page.locator("#term-table [role=gridcell]:visible").nth(1)).to_have_text("2")
    page.locator("#new-term textarea, #new-term input").first.fill(first_term)
    page.locator("#add-term").click()
    expect(page.locator("#term-table-status")).to_contain_text("already in the table")
    expect(page.locator("#term-table-status")).to_be_in_viewport()
    expect(page.locator("#term-table [role=gridcell]:visible").first).to_have_text("harbour")
    assert page.locator("#term-table [role=columnheader]").count() == 2
    page.locator("#term-table [role=gridcell]:visible").first.click()
    page.locator("#term-table .cell-menu-button:visible").first.click()
    expect(page.locator(".cell-menu")).to_contain_text("Delete row")
    expect(page.locator(".cell-menu")).not_to_contain_text("column")
    page.locator("#search-edited").click()
    expect(page.locator("#results-gallery img")).to_have_count(3)
