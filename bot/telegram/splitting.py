"""Split a long reply into Telegram messages without breaking text or formatting.

Telegram limits a message to 4096 characters *after entity parsing*, counted in UTF-16 code units
(an emoji outside the BMP counts 2). So the splitter works on the rendered HTML and measures only
its visible text: tags cost nothing, `&amp;` costs one. Each chunk's visible text is at most
`limit` units; the chunks' visible texts, concatenated, are exactly the original's; every chunk is
balanced HTML on its own: tags open at a split are closed at the end of the chunk and reopened
(with their attributes, so a code block keeps its language and a link its href) at the start of
the next. A split never falls inside a tag, an `&entity;` or a surrogate pair.

Where to split, best first: after a blank line (paragraph), after a line break, after a sentence
end (`. `, `! `, `? `, `…`), after a space, else at the limit itself. A boundary is taken only if
it keeps at least `min_fill` of the limit in the chunk, so a paragraph break near the start does
not produce a tiny message. The separator stays at the end of the earlier chunk (Telegram trims
it from the shown message); nothing is dropped.

    split_html("<b>" + "word " * 2000 + "</b>")  -> ["<b>word ... </b>", "<b>word ... </b>", ...]
    split_text(plain)                            -> the same for text sent without parse_mode
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

TELEGRAM_LIMIT = 4096

_TOKEN_RE = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)[^<>]*>|&(?:#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);"
)
_TAG_ONLY_RE = re.compile(r"<[^<>]*>")
_SENTENCE_END = frozenset(".!?…")


def utf16_len(text: str) -> int:
    """Length as Telegram counts it."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(slots=True)
class _Atom:
    raw: str  # HTML as written
    width: int  # visible UTF-16 units (0 for tags)
    char: str  # visible text ("" for tags)
    tag: str | None = None  # tag name for tags
    closing: bool = False


def _width(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def visible_len(value: str) -> int:
    """Visible UTF-16 length of Telegram HTML (tags free, an entity counts as its character)."""
    return utf16_len(html.unescape(_TAG_ONLY_RE.sub("", value)))


def _atoms(value: str) -> list[_Atom]:
    atoms: list[_Atom] = []
    pos = 0
    for match in _TOKEN_RE.finditer(value):
        for ch in value[pos : match.start()]:
            atoms.append(_Atom(ch, _width(ch), ch))
        raw = match.group(0)
        if raw.startswith("<"):
            atoms.append(_Atom(raw, 0, "", match.group(2).lower(), match.group(1) == "/"))
        else:
            ch = html.unescape(raw)
            atoms.append(_Atom(raw, utf16_len(ch), ch))
        pos = match.end()
    for ch in value[pos:]:
        atoms.append(_Atom(ch, _width(ch), ch))
    return atoms


def _neighbours(atoms: list[_Atom]) -> tuple[list[str], list[str]]:
    """For each atom, the visible character before it and after it (tags skipped)."""
    prev = [""] * len(atoms)
    nxt = [""] * len(atoms)
    last = ""
    for i, atom in enumerate(atoms):
        prev[i] = last
        if atom.char:
            last = atom.char
    last = ""
    for i in range(len(atoms) - 1, -1, -1):
        nxt[i] = last
        if atoms[i].char:
            last = atoms[i].char
    return prev, nxt


def _boundary_level(ch: str, prev: str, nxt: str) -> int:
    """How good a split *after* the character ch is: 4 paragraph, 3 line, 2 sentence, 1 word."""
    if ch == "\n":
        return 4 if prev == "\n" else 3
    if ch.isspace():
        if nxt.isspace() and nxt:
            return 0  # split after the whole whitespace run, not inside it
        return 2 if prev in _SENTENCE_END and prev else 1
    return 0


def split_html(value: str, limit: int = TELEGRAM_LIMIT, *, min_fill: float = 0.3) -> list[str]:
    """Split Telegram HTML into balanced chunks of at most `limit` visible UTF-16 units."""
    if limit < 2:
        raise ValueError("limit must be at least 2 (one character may take two units)")
    if visible_len(value) <= limit:
        return [value] if value else []
    atoms = _atoms(value)

    prev, nxt = _neighbours(atoms)
    chunks: list[str] = []
    reopen: list[_Atom] = []  # tags open at the start of the current chunk
    start = 0
    n = len(atoms)
    while start < n:
        # Walk forward while the chunk fits, remembering the best boundaries seen.
        width = 0
        best: dict[int, int] = {}  # level -> index of the atom after which to split
        end = start
        while end < n and width + atoms[end].width <= limit:
            width += atoms[end].width
            if atoms[end].char.isspace():
                level = _boundary_level(atoms[end].char, prev[end], nxt[end])
                if level and width >= limit * min_fill:
                    best[level] = end
            end += 1
        if end >= n:
            cut = n  # the rest fits
        else:
            level = max(best, default=0)
            cut = best[level] + 1 if level else end
            # A hard cut leaves tags that open right before it to the next chunk.
            while (
                not level and cut - 1 > start and atoms[cut - 1].tag and not atoms[cut - 1].closing
            ):
                cut -= 1
        # Tags right after the cut that close open tags belong to this chunk (keeps it tidy).
        piece = atoms[start:cut]
        stack = list(reopen)
        for a in piece:
            _apply(stack, a)
        while cut < n and atoms[cut].tag and atoms[cut].closing and stack:
            _apply(stack, atoms[cut])
            piece.append(atoms[cut])
            cut += 1
        text = "".join(a.raw for a in reopen) + "".join(a.raw for a in piece)
        text += "".join(f"</{a.tag}>" for a in reversed(stack))
        if any(a.char for a in piece) or not chunks:
            chunks.append(text)
        reopen = stack
        start = cut
    return chunks


def _apply(stack: list[_Atom], atom: _Atom) -> None:
    if atom.tag is None:
        return
    if atom.closing:
        for k in range(len(stack) - 1, -1, -1):
            if stack[k].tag == atom.tag:
                del stack[k]
                break
    else:
        stack.append(atom)


def split_text(text: str, limit: int = TELEGRAM_LIMIT, *, min_fill: float = 0.3) -> list[str]:
    """Split plain text (sent without parse_mode) the same way."""
    escaped = html.escape(text, quote=False)
    return [html.unescape(chunk) for chunk in split_html(escaped, limit, min_fill=min_fill)]
