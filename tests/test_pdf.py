"""`make pdf`: the built site printed as one PDF, offline, chapters in order."""

import re

import pytest
from pypdf import PdfReader

from tools.make_pdf import ROOT, make_pdf, toc_files

pytestmark = pytest.mark.site


@pytest.fixture(scope="module")
def book_pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("pdf") / "attnbook.pdf"
    pages, titles = make_pdf(ROOT / "_build" / "html", ROOT / "_toc.yml", path)
    return path, pages, titles


def _chapter_pages(reader: PdfReader, title_start: str) -> list:
    starts = [(reader.get_destination_page_number(item), item.title) for item in reader.outline]
    for index, (page, title) in enumerate(starts):
        if title.startswith(title_start):
            end = starts[index + 1][0] if index + 1 < len(starts) else len(reader.pages)
            return reader.pages[page:end]
    raise AssertionError(f"no bookmark starts with {title_start!r}: {[t for _, t in starts]}")


def test_every_document_is_printed_in_order_with_its_title(book_pdf):
    path, pages, titles = book_pdf
    reader = PdfReader(path)
    assert len(reader.pages) == pages
    assert len(titles) == len(toc_files(ROOT / "_toc.yml"))
    assert [item.title for item in reader.outline] == titles
    chapter_numbers = [int(m.group(1)) for t in titles if (m := re.match(r"(\d+)\. ", t))]
    assert chapter_numbers == sorted(chapter_numbers) and chapter_numbers[:3] == [1, 2, 3]
    assert pages >= 10 * len(chapter_numbers), f"only {pages} pages for {len(chapter_numbers)} chapters"


def test_the_pdf_has_typeset_math_and_figures(book_pdf):
    reader = PdfReader(book_pdf[0])
    chapter_4 = _chapter_pages(reader, "4. Queries, keys and values")
    text = "".join(page.extract_text() for page in chapter_4)
    assert "softmax(QK" in text.replace(" ", ""), "the formula of attention was not typeset into the PDF"
    assert sum(len(page.images) for page in chapter_4) >= 3, "chapter 4's figures are missing"
