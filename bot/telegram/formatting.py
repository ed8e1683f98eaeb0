"""Model Markdown -> the HTML subset Telegram accepts, and the plain text it shows.

Models answer in Markdown; Telegram's `parse_mode=HTML` knows a handful of tags (b, i, s, u, code,
pre, a, blockquote, tg-spoiler) and refuses the whole message when a tag is unknown or unbalanced.
So the renderer below never emits anything else, escapes `&`, `<`, `>` in all text, and closes
every tag it opens: delimiters without a partner (common in a half-streamed reply) stay literal.

    markdown_to_html("**Hi** `x<y`")   -> "<b>Hi</b> <code>x&lt;y</code>"
    html_to_text("<b>Hi</b> &amp; bye") -> "Hi & bye"      (what the chat would show)
    markdown_to_plain(md)              == html_to_text(markdown_to_html(md))

Mapping: `**b**`/`__b__` bold, `*i*`/`_i_` italic (underscores only at word edges, so snake_case
stays), `~~s~~` strikethrough, `||x||` spoiler, `` `code` ``, fenced blocks (with language) as
`<pre><code class="language-x">`, `[text](url)` links (http/https/tg/mailto only), `#` headings
as bold lines, `-`/`*`/`+` bullets as "•", `>` quotes as `<blockquote>`, tables as `<pre>`.
An unclosed fence (a reply still streaming) renders the rest as code.
"""

from __future__ import annotations

import html
import re

_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)[^\n]*$")
_HEADING_RE = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET_RE = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE_RE = re.compile(r"^ {0,3}>\s?(.*)$")
_RULE_RE = re.compile(r"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_TABLE_RE = re.compile(r"^\s*\|.*\|\s*$")
_LINK_RE = re.compile(r"\[([^\]\n]+)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SAFE_SCHEMES = ("http://", "https://", "tg://", "mailto:")
_TAG_RE = re.compile(r"<[^<>]*>")

# Inline delimiters, longest first, and the tag each one becomes.
_DELIMS: tuple[tuple[str, str], ...] = (
    ("**", "b"),
    ("__", "b"),
    ("~~", "s"),
    ("||", "tg-spoiler"),
    ("*", "i"),
    ("_", "i"),
)
_DELIM_START = re.compile("[" + re.escape("".join({d[0] for d, _ in _DELIMS})) + "]")


def escape(text: str) -> str:
    """Escape text for Telegram HTML (quotes are fine in text, so they stay)."""
    return html.escape(text, quote=False)


def html_to_text(value: str) -> str:
    """The visible text of Telegram HTML produced here: tags dropped, entities decoded."""
    return html.unescape(_TAG_RE.sub("", value))


def markdown_to_plain(markdown: str) -> str:
    """The reply without formatting, exactly as the HTML version reads."""
    return html_to_text(markdown_to_html(markdown))


def markdown_to_html(markdown: str) -> str:
    """Render model Markdown as Telegram HTML with balanced tags; see the module docstring."""
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE_RE.match(line)
        if fence:
            marker, language = fence.group(1), fence.group(2)
            body: list[str] = []
            i += 1
            while i < len(lines):
                stripped = lines[i].strip()
                if stripped.startswith(marker[0] * len(marker)) and not stripped.strip(marker[0]):
                    break
                body.append(lines[i])
                i += 1
            i += 1  # the closing fence (or past the end when unclosed)
            out.append(_code_block("\n".join(body), language))
            continue
        if _QUOTE_RE.match(line):
            quoted: list[str] = []
            while i < len(lines) and (m := _QUOTE_RE.match(lines[i])):
                quoted.append(_render_line(m.group(1)))
                i += 1
            out.append("<blockquote>" + "\n".join(quoted) + "</blockquote>")
            continue
        if _TABLE_RE.match(line):
            rows: list[str] = []
            while i < len(lines) and _TABLE_RE.match(lines[i]):
                rows.append(lines[i].strip())
                i += 1
            out.append("<pre>" + escape("\n".join(rows)) + "</pre>")
            continue
        out.append(_render_line(line))
        i += 1
    return "\n".join(out)


def _code_block(code: str, language: str) -> str:
    if language:
        lang = escape(language).replace('"', "")
        return f'<pre><code class="language-{lang}">{escape(code)}</code></pre>'
    return f"<pre>{escape(code)}</pre>"


def _render_line(line: str) -> str:
    heading = _HEADING_RE.match(line)
    if heading:
        # Bold inside a bold heading would nest <b> in <b>; the heading is bold already.
        text = heading.group(1)
        return f"<b>{render_inline(text.replace('**', '').replace('__', ''))}</b>" if text else ""
    if _RULE_RE.match(line):
        return "———"
    bullet = _BULLET_RE.match(line)
    if bullet:
        return f"{bullet.group(1)}• {render_inline(bullet.group(2))}"
    return render_inline(line)


def render_inline(text: str) -> str:
    """Inline Markdown of one line -> HTML. Code spans and links first, then emphasis."""
    pieces: list[str] = []
    pos = 0
    while pos < len(text):
        tick = text.find("`", pos)
        link = _LINK_RE.search(text, pos)
        nxt = min((p for p in (tick, link.start() if link else -1) if p >= 0), default=-1)
        if nxt < 0:
            pieces.append(_emphasis(text[pos:]))
            break
        if nxt == tick:
            run = len(text[tick:]) - len(text[tick:].lstrip("`"))
            close = text.find("`" * run, tick + run)
            if close < 0:
                # No closing backticks: literal text up to and including this run.
                pieces.append(_emphasis(text[pos : tick + run]))
                pos = tick + run
                continue
            pieces.append(_emphasis(text[pos:tick]))
            code = text[tick + run : close]
            if code.strip():
                code = code.strip() if code.startswith(" ") and code.endswith(" ") else code
            pieces.append(f"<code>{escape(code)}</code>")
            pos = close + run
            continue
        assert link is not None
        pieces.append(_emphasis(text[pos : link.start()]))
        label, url = link.group(1), link.group(2)
        if url.lower().startswith(_SAFE_SCHEMES):
            href = html.escape(url, quote=True)
            pieces.append(f'<a href="{href}">{_emphasis(label)}</a>')
        else:
            pieces.append(_emphasis(f"{label} ({url})"))
        pos = link.end()
    return "".join(pieces)


def _can_open(text: str, i: int, delim: str) -> bool:
    after = text[i + len(delim) : i + len(delim) + 1]
    if not after or after.isspace():
        return False
    if delim[0] == "_":
        before = text[i - 1 : i]
        return not before or not before.isalnum()
    return True


def _can_close(text: str, i: int, delim: str) -> bool:
    before = text[i - 1 : i]
    if not before or before.isspace():
        return False
    if delim[0] == "_":
        after = text[i + len(delim) : i + len(delim) + 1]
        return not after or not after.isalnum()
    return True


def _emphasis(text: str) -> str:
    """Bold/italic/strike/spoiler with a delimiter stack: a tag is emitted only in pairs.

    An opener is recorded as a placeholder; when its closer comes, the placeholder becomes the
    tag. Closing an outer delimiter turns openers still open inside it back into literal text, so
    crossed pairs (`**a *b** c*`) can never produce crossed tags. Leftover openers stay literal.
    """
    out: list[str] = []
    stack: list[tuple[str, int]] = []  # (delimiter, index of its placeholder in out)
    i = 0
    buf: list[str] = []

    def flush() -> None:
        if buf:
            out.append(escape("".join(buf)))
            buf.clear()

    while i < len(text):
        # Plain text up to the next character a delimiter can start with, in one piece: a reply
        # is rendered for every draft and again at the end, and going character by character
        # through six `startswith` each was most of the formatter's cost.
        found = _DELIM_START.search(text, i)
        start = len(text) if found is None else found.start()
        if start > i:
            buf.append(text[i:start])
            i = start
            continue
        for delim, tag in _DELIMS:
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
