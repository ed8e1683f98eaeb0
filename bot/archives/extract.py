"""Text out of an uploaded file, in blocks that passages never cross.

    document = open_document("biology.pdf", data)          # raises an UnreadableFile
    for start in range(0, document.block_count, 8):
        blocks = document.read(start, start + 8)            # CPU-bound: call it in a thread

A block is what a citation can point to: a PDF page (`page`), a Markdown or HTML section under
a heading (`section`), or a "page" of `TEXT_PAGE_LINES` lines of a plain text file (or the pages
between its form feeds, when it has them). Formats, by file name first, then the MIME type, then
the bytes themselves: plain text, Markdown, PDF (pypdf) and HTML (the standard library's parser).

Every parser's failure is translated here, and nowhere else, into the `UnreadableFile` tree of
`bot.archives.errors`; its own words go to `detail` for the log.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Protocol

from bot.archives.errors import CorruptFile, EmptyFile, EncryptedFile, UnsupportedFile
from bot.storage.archive_models import ArchiveKind

log = logging.getLogger(__name__)

TEXT_PAGE_LINES = 50
# A PDF is read a page at a time; past this many pages it is refused as damaged rather than
# parsed for minutes (ARCHIVE_MAX_MB bounds the file, not what it inflates to).
MAX_PDF_PAGES = 5000

_EXTENSIONS: dict[str, ArchiveKind] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
}
_MIME_TYPES: dict[str, ArchiveKind] = {
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "application/pdf": "pdf",
    "text/html": "html",
    "application/xhtml+xml": "html",
}


@dataclass(frozen=True, slots=True)
class Block:
    text: str
    page: int | None = None
    section: str | None = None


class Document(Protocol):
    name: str
    kind: ArchiveKind

    @property
    def block_count(self) -> int: ...

    @property
    def page_count(self) -> int:
        """Pages as the user counts them (PDF pages; text pages; 1 for Markdown and HTML)."""
        ...

    def read(self, start: int, stop: int) -> list[Block]:
        """Blocks `start` to `stop` (may raise `CorruptFile` on a damaged PDF page)."""
        ...


def detect_kind(name: str, data: bytes, mime: str | None = None) -> ArchiveKind:
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    mime_type = (mime or "").split(";")[0].strip().lower()
    if mime_type in _MIME_TYPES:
        return _MIME_TYPES[mime_type]
    if suffix:
        # A name that says it is something else (.docx, .jpg, .epub): believe it.
        raise UnsupportedFile(name, detail=f"extension {suffix!r}, MIME {mime!r}")
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if re.search(rb"<(!doctype\s+html|html[\s>])", head, re.I):
        return "html"
    return "text"


def open_document(name: str, data: bytes, mime: str | None = None) -> Document:
    """The file as a `Document`, or an `UnreadableFile` error saying why it cannot be one."""
    if not data.strip():
        raise EmptyFile(name, detail="no bytes (or only whitespace)")
    kind = detect_kind(name, data, mime)
    if kind == "pdf":
        return PdfDocument(name, data)
    text = decode_text(name, data)
    if kind == "html":
        return TextDocument(name, "html", html_blocks(text, name))
    if kind == "markdown":
        return TextDocument(name, "markdown", markdown_blocks(text))
    return TextDocument(name, "text", text_blocks(text))


# --- text ---


def decode_text(name: str, data: bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with a BOM; else Windows-1252. Binary is refused."""
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise CorruptFile(name, detail=f"bad {encoding}: {exc}") from None
    if b"\x00" in data[:8192]:
        raise UnsupportedFile(name, detail="binary content (NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def text_blocks(text: str) -> list[Block]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\f" in text:
        pages = text.split("\f")
    else:
        lines = text.split("\n")
        pages = [
            "\n".join(lines[i : i + TEXT_PAGE_LINES]) for i in range(0, len(lines), TEXT_PAGE_LINES)
        ]
    return [Block(page_text, page=number) for number, page_text in enumerate(pages, 1)]


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)


def markdown_blocks(text: str) -> list[Block]:
    """One block per section: the text under each heading (headings in code fences are text)."""
    text = _HTML_COMMENT.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    blocks: list[Block] = []
    section: str | None = None
    lines: list[str] = []
    fenced = False

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            body = _LINK.sub(r"\1", _IMAGE.sub(r"\1", body))
            blocks.append(Block(body, section=section))
        lines.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            lines.append(line)
            continue
        heading = None if fenced else _ATX_HEADING.match(line)
        if heading:
            flush()
            section = heading.group(2).strip() or section
            continue
        if not fenced and lines and lines[-1].strip() and _SETEXT_UNDERLINE.match(line):
            title = lines.pop().strip()
            flush()
            section = title
            continue
        lines.append(line)
    flush()
    return blocks


# --- HTML ---

_SKIPPED = frozenset({"script", "style", "head", "noscript", "template", "svg"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BREAKS = frozenset(
    {
        "p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "blockquote",
        "pre", "dd", "dt", "header", "footer", "main", "aside", "nav", "figure", "hr",
    }
)  # fmt: skip


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._section: str | None = None
        self._parts: list[str] = []
        self._heading: list[str] | None = None
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skipping += 1
        elif tag in _HEADINGS:
            self._flush()
            self._heading = []
        elif tag in _BREAKS:
            self._parts.append("\n\n" if tag in {"p", "div", "li", "tr"} else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _HEADINGS and self._heading is not None:
            title = " ".join("".join(self._heading).split())
            self._section = title or self._section
            self._heading = None
        elif tag in _BREAKS:
            self._parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._heading is not None:
            self._heading.append(data)
        else:
            self._parts.append(data)

    def _flush(self) -> None:
        body = re.sub(r"\n\s*\n\s*", "\n\n", "".join(self._parts)).strip()
        if body:
            self.blocks.append(Block(body, section=self._section))
        self._parts = []

    def close(self) -> None:
        super().close()
        self._flush()


def html_blocks(text: str, name: str = "") -> list[Block]:
    parser = _HTMLText()
    try:
        parser.feed(text)
        parser.close()
    except Exception as exc:  # the stdlib parser is lenient; anything it raises is damage
        raise CorruptFile(name, detail=f"HTML: {exc}") from exc
    return parser.blocks


@dataclass
class TextDocument:
    name: str
    kind: ArchiveKind
    blocks: list[Block]

    @property
    def block_count(self) -> int:
        return len(self.blocks)

    @property
    def page_count(self) -> int:
        return len(self.blocks) if self.kind == "text" else 1

    def read(self, start: int, stop: int) -> list[Block]:
        return self.blocks[start:stop]


# --- PDF ---


class PdfDocument:
    """A PDF read with pypdf, one page at a time (extraction is the slow part)."""

    kind: ArchiveKind = "pdf"

    def __init__(self, name: str, data: bytes) -> None:
        import pypdf
        from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

        self.name = name
        if b"%PDF-" not in data[:1024]:
            raise CorruptFile(name, detail="no %PDF- header")
        try:
            reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                # Many "protected" PDFs only restrict printing or copying: their user password
                # is empty and they open without asking. Only a real password stops us.
                try:
                    opened = reader.decrypt("")
                except (FileNotDecryptedError, DependencyError, NotImplementedError) as exc:
                    raise EncryptedFile(name, detail=f"pypdf: {exc}") from None
                if not opened:
                    raise EncryptedFile(name, detail="a user password is set")
            count = len(reader.pages)
        except (EncryptedFile, CorruptFile):
            raise
        except FileNotDecryptedError as exc:
            raise EncryptedFile(name, detail=f"pypdf: {exc}") from None
        except (PyPdfError, Exception) as exc:  # pypdf raises many kinds on a damaged file
            raise CorruptFile(name, detail=f"pypdf: {type(exc).__name__}: {exc}") from None
        if count == 0:
            raise EmptyFile(name, detail="a PDF without pages")
        if count > MAX_PDF_PAGES:
            raise CorruptFile(name, detail=f"{count} pages, over {MAX_PDF_PAGES}")
        self._reader = reader
        self._count = count

    @property
    def block_count(self) -> int:
        return self._count

    @property
    def page_count(self) -> int:
        return self._count

    def read(self, start: int, stop: int) -> list[Block]:
        blocks = []
        for index in range(start, min(stop, self._count)):
            blocks.append(Block(self._page_text(index), page=index + 1))
        return blocks

    def _page_text(self, index: int) -> str:
        try:
            return self._reader.pages[index].extract_text() or ""
        except Exception as exc:  # one damaged page damages the archive: nothing half-way
            raise CorruptFile(
                self.name, detail=f"pypdf, page {index + 1}: {type(exc).__name__}: {exc}"
            ) from None
