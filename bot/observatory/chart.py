"""The `/stats <agent>` chart: p95 latency and cost per turn over the window, a line per model,
model changes marked (dashed verticals). A PNG made with Pillow, no plotting library.

    png = render_chart("coach", points, changes, since, until)   # bytes of a PNG
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from datetime import datetime

from PIL import Image, ImageDraw, ImageFont

from bot.storage.ledger_models import SeriesPoint

WIDTH, HEIGHT = 900, 560
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP = 90, 20, 40
PANEL_HEIGHT, PANEL_GAP = 200, 60
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
GRID, TEXT, CHANGE = "#dddddd", "#222222", "#888888"


def render_chart(
    agent: str,
    points: Sequence[SeriesPoint],
    changes: Sequence[datetime],
    since: datetime,
    until: datetime,
) -> bytes:
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((MARGIN_LEFT, 10), f"{agent}: p95 latency and cost per turn", fill=TEXT, font=font)
    models = sorted({p.model for p in points})
    colour = {model: COLOURS[i % len(COLOURS)] for i, model in enumerate(models)}
    span = max((until - since).total_seconds(), 1.0)

    def x_of(moment: datetime) -> float:
        share = (moment - since).total_seconds() / span
        return MARGIN_LEFT + share * (WIDTH - MARGIN_LEFT - MARGIN_RIGHT)

    panels: list[tuple[str, Callable[[SeriesPoint], float | None], Callable[[float], str]]] = [
        ("p95 latency (ms)", lambda p: p.p95_ms, lambda v: f"{v:.0f}"),
        ("cost per turn (USD)", lambda p: p.cost_usd / p.turns if p.turns else None, _usd_axis),
    ]
    for index, (title, value, label) in enumerate(panels):
        top = MARGIN_TOP + index * (PANEL_HEIGHT + PANEL_GAP)
        bottom = top + PANEL_HEIGHT
        values = [v for p in points if (v := value(p)) is not None]
        high = max(values, default=1.0) or 1.0

        def y_of(v: float, top: int = top, high: float = high) -> float:
            return top + PANEL_HEIGHT - (v / high) * PANEL_HEIGHT

        draw.text((MARGIN_LEFT, top - 14), title, fill=TEXT, font=font)
        for step in range(5):
            v = high * step / 4
            y = y_of(v)
            draw.line([(MARGIN_LEFT, y), (WIDTH - MARGIN_RIGHT, y)], fill=GRID)
            draw.text((4, y - 6), label(v), fill=TEXT, font=font)
        draw.rectangle([(MARGIN_LEFT, top), (WIDTH - MARGIN_RIGHT, bottom)], outline=TEXT)
        for moment in changes:
            x = x_of(moment)
            for y in range(top, bottom, 8):
                draw.line([(x, y), (x, min(y + 4, bottom))], fill=CHANGE)
        for model in models:
            line = [
                (x_of(p.bucket), y_of(v))
                for p in points
                if p.model == model and (v := value(p)) is not None
            ]
            if len(line) > 1:
                draw.line(line, fill=colour[model], width=2)
            for x, y in line:
                draw.ellipse([(x - 2, y - 2), (x + 2, y + 2)], fill=colour[model])
    legend_y = MARGIN_TOP + 2 * (PANEL_HEIGHT + PANEL_GAP) - 30
    draw.text((MARGIN_LEFT, legend_y), f"{since:%Y-%m-%d %H:%M} UTC", fill=TEXT, font=font)
    draw.text(
        (WIDTH - MARGIN_RIGHT - 130, legend_y), f"{until:%Y-%m-%d %H:%M}", fill=TEXT, font=font
    )
    x = MARGIN_LEFT
    for model in models:
        draw.rectangle([(x, legend_y + 18), (x + 10, legend_y + 28)], fill=colour[model])
        draw.text((x + 14, legend_y + 17), model, fill=TEXT, font=font)
        x += 24 + int(draw.textlength(model, font=font))
    if changes:
        draw.text((x + 10, legend_y + 17), "¦ model change", fill=CHANGE, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _usd_axis(value: float) -> str:
    return f"{value:.2g}"
