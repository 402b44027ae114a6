"""Charts drawn on the server as inline SVG: no JavaScript, no build step.

:func:`line_chart` draws one series over time with its latest value and its range; the
pages use it for a queue's lag and its jobs per second.
"""

from __future__ import annotations

from collections.abc import Sequence

from .html import Markup, escape

__all__ = ["line_chart"]


def line_chart(
    points: Sequence[tuple[float, float]], *, title: str, width: int = 240, height: int = 48, unit: str = ""
) -> Markup:
    """``points`` as ``(time, value)``, oldest first, drawn ``width`` x ``height`` pixels.

    Fewer than two points draw an empty frame that says so.  The vertical scale starts
    at 0, so a flat lag of 5 does not look like a spike.
    """
    label = escape(title)
    if len(points) < 2:
        return Markup(
            f'<svg class="chart" width="{width}" height="{height}" role="img" aria-label="{label}">'
            f"<title>{label}: not enough samples yet</title>"
            f'<text x="4" y="{height // 2 + 4}" font-size="10" fill="#888">collecting…</text></svg>'
        )
    start, stop = points[0][0], points[-1][0]
    peak = max(value for _, value in points)
    top = peak or 1.0  # a flat zero is drawn at the bottom
    span = (stop - start) or 1.0

    def x(at: float) -> float:
        return round((at - start) / span * (width - 2) + 1, 1)

    def y(value: float) -> float:
        return round(height - 1 - value / top * (height - 14), 1)

    line = " ".join(f"{x(at)},{y(value)}" for at, value in points)
    last = points[-1][1]
    over = f"{span / 60:.0f} min" if span >= 60 else f"{span:.0f} s"
    caption = escape(f"{last:,.0f}{unit} now, at most {peak:,.0f}{unit} over {over}")
    return Markup(
        f'<svg class="chart" width="{width}" height="{height}" role="img" aria-label="{label}">'
        f"<title>{label}: {caption}</title>{_frame(width, height)}"
        f'<polyline fill="none" stroke="#36c" stroke-width="1.5" points="{line}"/>'
        f'<text x="4" y="11" font-size="10" fill="#555">{label}: {caption}</text></svg>'
    )


def _frame(width: int, height: int) -> str:
    return f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#fafafa" stroke="#ddd"/>'
