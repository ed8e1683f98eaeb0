"""Cutting a document's blocks into passages: the units search ranks and prompts quote.

    passages = split_blocks(blocks, first_ordinal=0)   # NewPassage(ordinal, text, page, section)

A passage is about `TARGET_CHARS` characters (~150 words, ~200 tokens: five of them fit a
prompt beside the conversation), made of whole paragraphs where they fit, else whole sentences,
else words. It never crosses a block, so it keeps its page or section for the citation. PDF
text comes with hard line breaks and hyphenated words at line ends; both are undone here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.archives.extract import Block
from bot.storage.archive_models import NewPassage

TARGET_CHARS = 900
# A paragraph or sentence longer than this is cut further.
MAX_CHARS = 1200

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=\S)")
_HYPHENATED = re.compile(r"(\w)-\n(\w)")
_SPACES = re.compile(r"\s+")


def paragraphs(text: str) -> list[str]:
    text = _HYPHENATED.sub(r"\1\2", text.replace("\r", ""))
    found = []
    for part in _PARAGRAPH_BREAK.split(text):
        clean = _SPACES.sub(" ", part).strip()
        if clean:
            found.append(clean)
    return found


def _pieces(paragraph: str) -> Iterable[str]:
    """A paragraph in pieces of at most MAX_CHARS: itself, its sentences, or runs of words."""
    if len(paragraph) <= MAX_CHARS:
        yield paragraph
        return
    for sentence in _SENTENCE_END.split(paragraph):
        if len(sentence) <= MAX_CHARS:
            yield sentence
            continue
        words: list[str] = []
        size = 0
        for word in sentence.split(" "):
            if words and size + 1 + len(word) > TARGET_CHARS:
                yield " ".join(words)
                words, size = [], 0
            # A "word" longer than a passage (a URL, a base64 blob) is cut where it stands.
            while len(word) > MAX_CHARS:
                yield word[:MAX_CHARS]
                word = word[MAX_CHARS:]
            words.append(word)
            size += len(word) + 1
        if words:
            yield " ".join(words)


def split_text(text: str) -> list[str]:
    out: list[str] = []
    current = ""
    for paragraph in paragraphs(text):
        for piece in _pieces(paragraph):
            if current and len(current) + 1 + len(piece) > TARGET_CHARS:
                out.append(current)
                current = piece
            else:
                current = f"{current} {piece}" if current else piece
    if current:
        out.append(current)
    return out


def split_blocks(blocks: Iterable[Block], *, first_ordinal: int = 0) -> list[NewPassage]:
    passages: list[NewPassage] = []
    ordinal = first_ordinal
    for block in blocks:
        for text in split_text(block.text):
            passages.append(NewPassage(ordinal, text, page=block.page, section=block.section))
            ordinal += 1
    return passages
