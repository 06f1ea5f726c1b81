"""A horizontal bar chart as static SVG: readable offline, no plotting library, no script."""

from __future__ import annotations

from html import escape
from pathlib import Path


def bar_chart(rows: list[tuple[str, float]], path: Path, fmt: str = "{:.0f}", title: str = "") -> None:
    """One bar per (label, value), scaled to the largest; `fmt` prints the value beside its bar."""
    width, bar_h, label_w, top_pad = 720, 22, 300, 30 if title else 0
    top = max((v for _, v in rows), default=0) or 1
    scale = (width - label_w - 90) / top
    bars = "".join(
        f"<text x='0' y='{top_pad + i * 30 + 16}'>{escape(name)}</text>"
        f"<rect x='{label_w}' y='{top_pad + i * 30}' width='{v * scale:.1f}' height='{bar_h}' fill='#4a7ebb'/>"
        f"<text x='{label_w + v * scale + 4:.1f}' y='{top_pad + i * 30 + 16}'>{escape(fmt.format(v))}</text>"
        for i, (name, v) in enumerate(rows)
    )
    heading = f"<text x='0' y='18' font-weight='bold'>{escape(title)}</text>" if title else ""
    path.write_text(
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{top_pad + len(rows) * 30}' "
        f"font-family='sans-serif' font-size='12'>{heading}{bars}</svg>",
        encoding="utf-8",
    )
