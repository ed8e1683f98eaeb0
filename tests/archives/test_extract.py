"""Formats in, blocks out: what each kind of file becomes, and the kind refusals."""

from __future__ import annotations

import codecs

import pytest

from bot.archives.errors import CorruptFile, EmptyFile, EncryptedFile, UnsupportedFile
from bot.archives.extract import TEXT_PAGE_LINES, detect_kind, open_document
from tests.archives.documents import corrupt_pdf, encrypted_pdf, pdf_bytes, truncated_pdf


def _all(
    name: str, data: bytes, mime: str | None = None
) -> list[tuple[int | None, str | None, str]]:
    document = open_document(name, data, mime)
    return [(b.page, b.section, b.text) for b in document.read(0, document.block_count)]


def test_pdf_pages_keep_their_numbers() -> None:
    data = pdf_bytes([["Chapter one", "Cells divide."], [], ["Chapter three (last)"]])
    document = open_document("bio.pdf", data)
    assert (document.kind, document.page_count, document.block_count) == ("pdf", 3, 3)
    blocks = document.read(0, 3)
    assert [b.page for b in blocks] == [1, 2, 3]
    assert "Cells divide." in blocks[0].text
    assert blocks[1].text.strip() == ""
    assert "Chapter three (last)" in blocks[2].text
    assert document.read(1, 2)[0].page == 2


def test_markdown_sections_come_from_headings_not_from_code() -> None:
    text = (
        "Intro line.\n\n# Cells\nCells are small.\n\n```\n# not a heading\n```\n"
        "## Mitochondria ##\nThey make [ATP](https://x.example/atp). ![diagram](d.png)\n"
        "Setext title\n============\nUnder it.\n"
    )
    blocks = _all("notes.md", text.encode())
    assert [section for _, section, _ in blocks] == [None, "Cells", "Mitochondria", "Setext title"]
    assert "# not a heading" in blocks[1][2]
    assert blocks[2][2] == "They make ATP. diagram"
    assert all(page is None for page, _, _ in blocks)


def test_html_text_without_scripts_in_sections() -> None:
    html = (
        "<!DOCTYPE html><html><head><title>T</title><style>p{}</style></head><body>"
        "<p>Before &amp; after.</p><h2>Photo<b>synthesis</b></h2><p>Light</p><p>to sugar.</p>"
        "<script>var secret = 1;</script></body></html>"
    )
    blocks = _all("page.html", html.encode())
    assert [(section, text) for _, section, text in blocks] == [
        (None, "Before & after."),
        ("Photosynthesis", "Light\n\nto sugar."),
    ]


def test_plain_text_pages_by_form_feed_or_by_lines() -> None:
    assert [p for p, _, _ in _all("a.txt", b"one\fTwo\fthree")] == [1, 2, 3]
    lines = "\n".join(f"line {i}" for i in range(TEXT_PAGE_LINES * 2 + 1)).encode()
    blocks = _all("b.txt", lines)
    assert [p for p, _, _ in blocks] == [1, 2, 3]
    assert blocks[1][2].startswith(f"line {TEXT_PAGE_LINES}")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("naïve café".encode(), "naïve café"),
        (codecs.BOM_UTF8 + "naïve".encode(), "naïve"),
        ("naïve".encode("utf-16"), "naïve"),
        ("naïve".encode("cp1252"), "naïve"),
    ],
)
def test_text_encodings(data: bytes, expected: str) -> None:
    assert _all("t.txt", data)[0][2] == expected


def test_the_kind_comes_from_the_name_then_the_mime_type_then_the_bytes() -> None:
    assert detect_kind("x.MD", b"") == "markdown"
    assert detect_kind("x", b"", "text/markdown; charset=utf-8") == "markdown"
    assert detect_kind("upload", b"%PDF-1.4 ...") == "pdf"
    assert detect_kind("upload", b"<!doctype html><p>x") == "html"
    assert detect_kind("upload", b"just words") == "text"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("report.docx", b"PK\x03\x04 zip"),
        ("photo.jpg", b"\xff\xd8\xff"),
        ("blob", b"\x00\x01\x02 binary"),
    ],
)
def test_unsupported_files_are_refused_kindly(name: str, data: bytes) -> None:
    with pytest.raises(UnsupportedFile) as error:
        open_document(name, data)
    assert "plain text, Markdown, PDF and HTML" in str(error.value)
    assert error.value.detail


def test_an_encrypted_pdf_is_refused_but_an_owner_only_one_opens() -> None:
    with pytest.raises(EncryptedFile) as error:
        open_document("locked.pdf", encrypted_pdf([["Top secret"]]))
    assert "password" in str(error.value)
    assert "locked.pdf" in str(error.value)
    opened = open_document("restricted.pdf", encrypted_pdf([["Readable"]], user_password=""))
    assert "Readable" in opened.read(0, 1)[0].text


@pytest.mark.parametrize(
    "data",
    [corrupt_pdf(), truncated_pdf([["x" * 60] * 40] * 4), b"not a pdf at all"],
)
def test_a_damaged_pdf_is_refused(data: bytes) -> None:
    with pytest.raises(CorruptFile) as error:
        open_document("broken.pdf", data)
    assert "damaged" in str(error.value)
    assert error.value.detail  # the parser's words, for the log


@pytest.mark.parametrize(("name", "data"), [("e.txt", b""), ("e.md", b"  \n\t "), ("e.pdf", b"")])
def test_empty_files_are_refused(name: str, data: bytes) -> None:
    with pytest.raises(EmptyFile):
        open_document(name, data)
