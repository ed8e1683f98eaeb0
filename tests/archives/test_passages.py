"""Blocks into passages: sizes, boundaries, pages kept, PDF line breaks undone."""

from __future__ import annotations

from bot.archives.extract import Block
from bot.archives.passages import MAX_CHARS, TARGET_CHARS, split_blocks, split_text


def test_short_paragraphs_share_a_passage_and_long_ones_split_at_sentences() -> None:
    short = "First point.\n\nSecond point."
    assert split_text(short) == ["First point. Second point."]
    sentence = "The cell membrane controls what enters and leaves the cell. "
    long = sentence * 40
    passages = split_text(long)
    assert len(passages) > 1
    assert all(len(p) <= MAX_CHARS for p in passages)
    assert all(p.endswith("cell.") for p in passages)
    assert " ".join(passages) == long.strip()


def test_a_run_without_sentences_or_spaces_is_still_cut() -> None:
    words = split_text("word " * 1000)
    assert all(len(p) <= TARGET_CHARS for p in words)
    blob = split_text("x" * 5000)
    assert all(len(p) <= MAX_CHARS for p in blob)
    assert "".join(blob) == "x" * 5000


def test_pdf_line_breaks_and_hyphens_are_undone() -> None:
    assert split_text("mito-\nchondria make\nATP") == ["mitochondria make ATP"]


def test_passages_keep_their_block_and_are_numbered_across_blocks() -> None:
    blocks = [
        Block("Page one text.", page=1),
        Block(""),
        Block("Long. " * 300, page=2),
        Block("A section.", section="Cells"),
    ]
    passages = split_blocks(blocks, first_ordinal=10)
    assert [p.ordinal for p in passages] == list(range(10, 10 + len(passages)))
    assert passages[0].page == 1
    assert {p.page for p in passages[1:-1]} == {2}
    assert (passages[-1].section, passages[-1].text) == ("Cells", "A section.")
