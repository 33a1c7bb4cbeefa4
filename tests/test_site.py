"""The built website, as a reader sees it: opened in headless Chromium from a local
server with every other host blocked, so anything fetched from the network fails."""

import functools
import http.server
import os
import re
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("ATTNBOOK_SITE", ROOT / "_build" / "html"))
SCREENSHOTS = ROOT / "tests" / "_report"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def server():
    if not (SITE / "index.html").exists():
        pytest.fail("the site is not built: run `make book` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's `chromium` package "
                    "(make test does so when run as root) or set CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


class Visit:
    """One page load, recording console errors and every request to another host."""

    def __init__(self, browser, server, path):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.console_errors, self.external_requests = [], []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.route("**/*", self._only_local)
        self.page.goto(f"{server}/{path}", wait_until="networkidle")

    def _only_local(self, route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.external_requests.append(route.request.url)
            route.abort()

    def screenshot(self, name):
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)

    def assert_clean(self):
        assert self.external_requests == [], "the page fetched from the network"
        assert self.console_errors == []


def test_chapter_1_shows_its_figures_and_typeset_math(browser, server):
    visit = Visit(browser, server, "chapters/01_bottleneck.html")
    page = visit.page
    assert "1. The bottleneck" in page.inner_text("h1")
    page.wait_for_selector("mjx-container", state="attached", timeout=20_000)
    assert page.locator("mjx-container").count() >= 3
    assert "\\operatorname" not in page.inner_text("main")  # no raw LaTeX left over
    images = page.locator("main img")
    assert images.count() >= 3
    widths = page.eval_on_selector_all("main img", "imgs => imgs.map(i => i.naturalWidth)")
    assert all(w > 100 for w in widths), widths
    assert page.locator("a[href*='colab.research.google.com']").count() >= 1
    page.locator("mjx-container").first.scroll_into_view_if_needed()
    visit.screenshot("chapter_01")
    visit.assert_clean()


def test_math_is_served_by_the_site_itself(browser, server):
    visit = Visit(browser, server, "chapters/notation.html")
    visit.page.wait_for_selector("mjx-container", state="attached", timeout=20_000)
    sources = visit.page.eval_on_selector_all("script[src]", "s => s.map(x => x.src)")
    mathjax = [s for s in sources if "mathjax" in s.lower()]
    assert mathjax and all(s.startswith(server) for s in mathjax), mathjax
    visit.screenshot("notation")
    visit.assert_clean()


def test_search_finds_chapter_1(browser, server):
    visit = Visit(browser, server, "search.html?q=bottleneck")
    visit.page.wait_for_selector("ul.search li a", timeout=20_000)
    links = visit.page.eval_on_selector_all("ul.search li a", "a => a.map(x => x.href)")
    assert any("01_bottleneck" in link for link in links), links
    visit.screenshot("search")
    visit.assert_clean()


def test_exercise_page_shows_its_exercises(browser, server):
    visit = Visit(browser, server, "exercises/01_bottleneck.html")
    text = visit.page.inner_text("main")
    for number in range(1, 6):
        assert f"Exercise 1.{number}" in text
    assert "NotImplementedError" in text and "### BEGIN SOLUTION" not in text
    visit.screenshot("exercises_01")
    visit.assert_clean()


def test_welcome_and_syllabus_pages_render(browser, server):
    visit = Visit(browser, server, "chapters/syllabus.html")
    text = visit.page.inner_text("main")
    assert "The bottleneck" in text and "FlashAttention" in text
    hrefs = visit.page.eval_on_selector_all("main a.internal", "a => a.map(x => x.href)")
    assert any("01_bottleneck" in h for h in hrefs)
    visit.assert_clean()
    visit = Visit(browser, server, "index.html")
    assert "Attention, from alignment to kernels" in visit.page.inner_text("h1")
    visit.screenshot("welcome")
    visit.assert_clean()


def toc_pages():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [entry["file"] for part in toc["parts"] for entry in part["chapters"]]


# Every image on a page: its alt text, whether it loaded, and (inside the text
# column) whether it fits the column's width at the test's 1280-pixel window.
IMAGES = """imgs => imgs.map(i => {
    const column = i.closest("main") && i.closest("article, main");
    return {src: i.getAttribute("src") || "", alt: (i.getAttribute("alt") || "").trim(),
            loaded: i.complete && i.naturalWidth > 0,
            width: i.getBoundingClientRect().width,
            room: column ? column.getBoundingClientRect().width : null};
})"""
IMAGE_FILE = re.compile(r"\.(png|jpe?g|gif|svg|webp)$", re.IGNORECASE)


def image_problems(images):
    """One line per image a reader would miss: not loaded, no alt text (docutils writes
    the file's path as alt text when a figure has none), or wider than the text."""
    problems = []
    for image in images:
        name = image["src"].rsplit("/", 1)[-1][:16]
        if not image["loaded"]:
            problems.append(f"{name}: did not load")
        if not image["alt"] or IMAGE_FILE.search(image["alt"]):
            problems.append(f"{name}: no alt text ({image['alt'] or 'empty'})")
        if image["room"] is not None and image["width"] > image["room"] + 1:
            problems.append(f"{name}: {image['width']:.0f} px wide in a column of "
                            f"{image['room']:.0f} px")
    return problems


def test_image_problems_are_caught():
    good = {"src": "../_images/a.png", "alt": "A line rising", "loaded": True,
            "width": 600, "room": 800}
    assert image_problems([good]) == []
    assert image_problems([{**good, "alt": "../_images/a.png"}])  # docutils' default
    assert image_problems([{**good, "alt": ""}])
    assert image_problems([{**good, "loaded": False}])
    assert image_problems([{**good, "width": 900}])


@pytest.mark.parametrize("page", toc_pages())
def test_every_page_loads_cleanly_offline(browser, server, page):
    visit = Visit(browser, server, f"{page}.html")
    assert visit.page.locator("article h1").count() >= 1
    images = visit.page.eval_on_selector_all("img", IMAGES)
    assert image_problems(images) == [], f"{page}: images a reader would miss"
    if visit.page.locator("main .math").count():
        visit.page.wait_for_selector("mjx-container", state="attached", timeout=20_000)
    visit.assert_clean()


# The pages with figures driven by a slider (attnbook.viz.SliderFigure), and how many.
SLIDER_PAGES = {"chapters/02_additive_attention": 1, "chapters/04_queries_keys_values": 2,
                "chapters/06_position": 1}
SHOWN = """box => {const img = box.querySelector("img");
    return {src: img.src, alt: img.alt, text: box.querySelector("output").textContent,
            value: box.querySelector("input").value,
            loaded: img.complete && img.naturalWidth > 0};}"""


@pytest.mark.parametrize("page", SLIDER_PAGES)
def test_sliders_change_their_picture_without_a_kernel(browser, server, page):
    visit = Visit(browser, server, f"{page}.html")
    boxes = visit.page.locator("figure.attnbook-slider")
    assert boxes.count() == SLIDER_PAGES[page]
    for n in range(boxes.count()):
        box = boxes.nth(n)
        slider = box.locator("input[type=range]")
        assert slider.get_attribute("aria-label"), "the slider has no accessible name"
        start = box.evaluate(SHOWN)
        assert start["loaded"] and start["alt"] and start["src"].startswith("data:image/png")
        # Set the value and send the events a browser sends when the slider is dragged.
        last = int(slider.get_attribute("max"))
        target = 0 if int(start["value"]) != 0 else last
        slider.evaluate("""(s, v) => {s.value = v;
            s.dispatchEvent(new Event("input", {bubbles: true}));
            s.dispatchEvent(new Event("change", {bubbles: true}));}""", target)
        moved = box.evaluate(SHOWN)
        assert moved["value"] == str(target)
        assert moved["src"] != start["src"] and moved["alt"] != start["alt"]
        assert moved["text"] != start["text"]
        # And with the keyboard: End goes to the last frame, Home to the first.
        slider.focus()
        slider.press("End" if target == 0 else "Home")
        pressed = box.evaluate(SHOWN)
        assert pressed["value"] == str(last - target) and pressed["src"] != moved["src"]
        visit.page.wait_for_function(
            "box => box.querySelector('img').complete && "
            "box.querySelector('img').naturalWidth > 0", arg=box.element_handle())
    boxes.first.scroll_into_view_if_needed()
    visit.screenshot(f"slider_{page.rsplit('/', 1)[-1][:2]}")
    visit.assert_clean()
