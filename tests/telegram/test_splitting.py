"""Long replies split into balanced chunks of at most 4096 visible UTF-16 units, losing nothing."""

from __future__ import annotations

import random
import re

import pytest

from bot.telegram.formatting import markdown_to_html
from bot.telegram.splitting import split_html, split_text, utf16_len
from tests.fakes.telegram_server import parse_telegram_html


def _check(value: str, chunks: list[str], limit: int) -> None:
    visible = [parse_telegram_html(c) for c in chunks]  # raises if a chunk is unbalanced
    assert "".join(visible) == parse_telegram_html(value)
    assert all(utf16_len(v) <= limit for v in visible)


def test_short_text_is_one_chunk() -> None:
    assert split_html("<b>hi</b>") == ["<b>hi</b>"]
    assert split_html("") == []


def test_prefers_paragraphs_then_lines_then_sentences_then_words() -> None:
    para = "a" * 30 + ".\n\n" + "b" * 30 + "\n" + "c" * 10
    assert split_html(para, 50)[0] == "a" * 30 + ".\n\n"
    lines = "a" * 30 + "\n" + "b" * 30
    assert split_html(lines, 50)[0] == "a" * 30 + "\n"
    sentences = "One two three. Four five six seven eight nine"
    assert split_html(sentences, 30)[0] == "One two three. "
    words = "alpha beta gamma delta epsilon"
    assert split_html(words, 20)[0] == "alpha beta gamma "
    assert split_html("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_tags_are_closed_and_reopened_with_attributes() -> None:
    value = '<pre><code class="language-py">' + "line\n" * 30 + "</code></pre>"
    chunks = split_html(value, 50)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.startswith('<pre><code class="language-py">')
        assert chunk.endswith("</code></pre>")
    _check(value, chunks, 50)


def test_never_splits_an_entity_or_a_surrogate_pair() -> None:
    value = "&amp;" * 15 + "😀" * 15
    chunks = split_html(value, 7)
    for chunk in chunks:
        assert re.fullmatch(r"(&amp;|😀)+", chunk), chunk
    _check(value, chunks, 7)


def test_ten_thousand_characters_of_markdown() -> None:
    markdown = "\n\n".join(
        f"**Section {i}.** " + "Some *text* with `code` & more. " * 12 for i in range(30)
    )
    assert len(markdown) > 10_000
    chunks = split_html(markdown_to_html(markdown))
    assert len(chunks) >= 3
    _check(markdown_to_html(markdown), chunks, 4096)
    # Paragraph boundaries were found: every chunk but the last ends with a blank line.
    assert all(parse_telegram_html(c).endswith("\n\n") for c in chunks[:-1])


@pytest.mark.parametrize("seed", range(6))
def test_random_documents_split_correctly(seed: int) -> None:
    rng = random.Random(seed)
    words = [
        "word",
        "**bold words here**",
        "*it*",
        "`co<de`",
        "a&b",
        "😀",
        "end.",
        "Q?",
        "[link](https://e.com/?a=1&b=2)",
        "\n",
        "\n\n",
        "\n```py\nx = 1 < 2\ny\n```\n",
        "> quote\n",
        "~~s~~",
        "x" * 300,
    ]
    for _ in range(25):
        markdown = " ".join(rng.choice(words) for _ in range(rng.randint(1, 400)))
        value = markdown_to_html(markdown)
        limit = rng.choice([5, 40, 333, 4096])
        _check(value, split_html(value, limit), limit)


def test_plain_text_split_keeps_every_character() -> None:
    text = "<not a tag> & " * 700
    chunks = split_text(text, 100)
    assert "".join(chunks) == text
    assert all(utf16_len(c) <= 100 for c in chunks)
