"""Print the built site as one PDF, offline, in the order of the table of contents.

    python -m tools.make_pdf [--site _build/html] [--toc _toc.yml] [--out _build/attnbook.pdf]

Each page is opened in headless Chromium from a local server (every other host is
blocked), MathJax is given time to typeset, and the page is printed with the site's
print style sheet. The pages are joined with pypdf, with a bookmark per page.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import yaml
from pypdf import PdfReader, PdfWriter

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WAIT_FOR_MATH = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
}"""
FOOTER = ('<div style="font-size:8px; width:100%; text-align:center; color:#666;">'
          '<span class="title"></span> · <span class="pageNumber"></span></div>')


def toc_files(toc_path: Path) -> list[str]:
    """The documents of a jupyter-book table of contents, root first, in reading order."""
    toc = yaml.safe_load(toc_path.read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            files.append(chapter["file"])
            files.extend(section["file"] for section in chapter.get("sections", []))
    return files


class LocalSite:
    """The built site served on 127.0.0.1 while the pages are printed."""

    def __init__(self, site: Path):
        handler = functools.partial(_QuietHandler, directory=str(site))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _only_local(route) -> None:
    if urlparse(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        route.abort()


def print_page(browser, url: str) -> tuple[bytes, str]:
    """One page as PDF bytes, and its title (the first heading)."""
    page = browser.new_page()
    try:
        page.route("**/*", _only_local)
        page.goto(url, wait_until="networkidle")
        page.evaluate(WAIT_FOR_MATH)
        page.emulate_media(media="print")
        heading = page.locator("main h1").first
        title = heading.inner_text().strip().rstrip("#").strip() if heading.count() else url
        pdf = page.pdf(format="A4", print_background=False, display_header_footer=True,
                       header_template="<div></div>", footer_template=FOOTER,
                       margin={"top": "16mm", "bottom": "18mm", "left": "16mm", "right": "16mm"})
        return pdf, title
    finally:
        page.close()


def make_pdf(site: Path, toc: Path, out: Path) -> tuple[int, list[str]]:
    """Print every page of the table of contents into `out`; return its page count and the titles."""
    if not (site / "index.html").exists():
        raise FileNotFoundError(f"no built site at {site}: run `make book` first")
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"Chromium not found at {CHROMIUM}: install it or set CHROMIUM")
    from playwright.sync_api import sync_playwright

    writer, titles = PdfWriter(), []
    server = LocalSite(site)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=["--no-sandbox", "--disable-gpu"])
            for document in toc_files(toc):
                if not (site / f"{document}.html").exists():
                    raise FileNotFoundError(f"{document}.html is not in the built site {site}: "
                                            "run `make book` first")
                pdf, title = print_page(browser, f"{server.url}/{document}.html")
                first_page = len(writer.pages)
                writer.append(PdfReader(io.BytesIO(pdf)))
                writer.add_outline_item(title=title, page_number=first_page)
                titles.append(title)
            browser.close()
    finally:
        server.close()
    writer.add_metadata({"/Title": yaml.safe_load((ROOT / "_config.yml").read_text())["title"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        writer.write(handle)
    return len(writer.pages), titles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "attnbook.pdf")
    args = parser.parse_args()
    pages, titles = make_pdf(args.site, args.toc, args.out)
    print(f"wrote {args.out}: {pages} pages, {len(titles)} documents")


if __name__ == "__main__":
    main()
