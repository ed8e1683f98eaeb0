"""Passages as a prompt section the model can cite from.

    format_passages(hits)
    # [1] biology.pdf, p. 3
    # Mitochondria are the site of aerobic respiration ...

Numbered, each under its citation, so a reply can say "(biology.pdf, p. 3)" and the user can
find the page. Empty when there is nothing to cite, so a prompt without archives is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.storage.archive_models import PassageHit


def format_passages(hits: Sequence[PassageHit], *, max_chars: int = 6000) -> str:
    parts: list[str] = []
    used = 0
    for number, hit in enumerate(hits, 1):
        part = f"[{number}] {hit.citation}\n{hit.text}"
        if parts and used + len(part) > max_chars:
            break
        parts.append(part)
        used += len(part) + 2
    return "\n\n".join(parts)
