"""Model Markdown renders to HTML Telegram accepts, with the same visible text as the plain form."""

from __future__ import annotations

import random

import pytest

from bot.telegram.formatting import _DELIMS as DELIMS
from bot.telegram.formatting import (
    _can_close,
    _can_open,
    _emphasis,
    escape,
    html_to_text,
    markdown_to_html,
    markdown_to_plain,
)
from tests.fakes.telegram_server import parse_telegram_html


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("*it* and _it_ but snake_case_name", "<i>it</i> and <i>it</i> but snake_case_name"),
        ("~~gone~~ ||secret||", "<s>gone</s> <tg-spoiler>secret</tg-spoiler>"),
        ("`a<b & c>`", "<code>a&lt;b &amp; c&gt;</code>"),
        ("x < y && z > w", "x &lt; y &amp;&amp; z &gt; w"),
        ("[docs](https://e.com/?a=1&b=2)", '<a href="https://e.com/?a=1&amp;b=2">docs</a>'),
        ("[bad](javascript:alert(1))", "bad (javascript:alert(1))"),
        ("## Title with **bold**", "<b>Title with bold</b>"),
        ("- one\n* two\n  + nested", "• one\n• two\n  • nested"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("> quoted **b**\n> more", "<blockquote>quoted <b>b</b>\nmore</blockquote>"),
        (
            "```python\nif a < b:\n    pass\n```",
            '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre>',
        ),
        ("```\nno lang\n```", "<pre>no lang</pre>"),
        ("| a | b |\n|---|---|", "<pre>| a | b |\n|---|---|</pre>"),
    ],
)
def test_markdown_renders_to_telegram_html(markdown: str, expected: str) -> None:
    assert markdown_to_html(markdown) == expected


@pytest.mark.parametrize(
    "markdown",
    [
        "**a *b** c*",  # crossed pairs
        "**unclosed bold",
        "*",
        "****",
        "__init__.py and **x",
        "```py\nstreaming, fence not closed yet <",
        "`unclosed code **b**",
        "<script>alert(1)</script> &nbsp;",
        "[**link** text](https://x.y) **[a](https://b)**",
    ],
)
def test_tricky_markdown_still_yields_html_telegram_accepts(markdown: str) -> None:
    rendered = markdown_to_html(markdown)
    assert parse_telegram_html(rendered) == markdown_to_plain(markdown)


def test_no_text_is_lost_in_plain_form() -> None:
    markdown = "Hello **world**, `code` & <tags>.\n\n- item"
    plain = markdown_to_plain(markdown)
    assert plain == "Hello world, code & <tags>.\n\n• item"
    assert html_to_text(markdown_to_html(markdown)) == plain


def test_random_markdown_is_always_accepted() -> None:
    # Seeded random documents built from the constructs models produce, incl. broken ones.
    parts = [
        "**",
        "*",
        "_",
        "__",
        "~~",
        "||",
        "`",
        "```",
        "\n",
        " ",
        "word",
        "<",
        ">",
        "&",
        "[l](https://a.b)",
        "# ",
        "> ",
        "- ",
        "😀",
        "snake_case",
        "&amp;",
        "|x|",
    ]
    rng = random.Random(20240521)
    for _ in range(2000):
        markdown = "".join(rng.choice(parts) for _ in range(rng.randint(1, 40)))
        rendered = markdown_to_html(markdown)
        assert parse_telegram_html(rendered) == html_to_text(rendered), markdown


def _char_by_char_emphasis(text: str) -> str:
    """The formatter's emphasis pass as it was before its plain-text fast path (reference)."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []  # (delimiter, index of its placeholder in out)
    i = 0
    buf: list[str] = []

    def flush() -> None:
        if buf:
            out.append(escape("".join(buf)))
            buf.clear()

    while i < len(text):
        for delim, tag in DELIMS:
            if not text.startswith(delim, i):
                continue
            open_index = next(
                (k for k in range(len(stack) - 1, -1, -1) if stack[k][0] == delim), None
            )
            if (
                open_index is not None
                and (buf or stack[open_index][1] != len(out) - 1)  # no empty tags
                and _can_close(text, i, delim)
            ):
                flush()
                for literal, idx in stack[open_index + 1 :]:
                    out[idx] = escape(literal)
                _, idx = stack[open_index]
                del stack[open_index:]
                out[idx] = f"<{tag}>"
                out.append(f"</{tag}>")
                i += len(delim)
                break
            if _can_open(text, i, delim):
                flush()
                stack.append((delim, len(out)))
                out.append(escape(delim))
                i += len(delim)
                break
        else:
            buf.append(text[i])
            i += 1
            continue
    flush()
    return "".join(out)


def test_the_emphasis_fast_path_renders_exactly_as_the_char_by_char_pass() -> None:
    rng = random.Random(1201)
    pieces = ["**", "__", "~~", "||", "*", "_", "~", "|", "a", "word", " ", "<&>", "é", "x_y"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 16)))
        assert _emphasis(text) == _char_by_char_emphasis(text), text
