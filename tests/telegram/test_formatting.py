"""Model Markdown renders to HTML Telegram accepts, with the same visible text as the plain form."""

from __future__ import annotations

import random

import pytest

from bot.telegram.formatting import html_to_text, markdown_to_html, markdown_to_plain
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
