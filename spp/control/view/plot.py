"""Rate-over-time charts of a run (``spp-pktgen --plot FILE``, ``spp top --plot FILE``).

SVG is written here, as text (no plotting library needed, and the names stay searchable); PNG
goes through matplotlib (the ``plot`` extra) when it is installed.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import escape

from .svg import PROCESS_COLORS

Series = dict[str, list[tuple[float, float]]]
"""Line name -> [(seconds since the start, value)]."""

PLOT_SUFFIXES = (".svg", ".png")
WIDTH, HEIGHT = 820, 420
LEFT, RIGHT, TOP, BOTTOM = 78, 200, 40, 48


class PlotError(Exception):
    """The chart cannot be written; the message says why."""


def check_plot_path(path: str) -> None:
    """Refuse a file name the chart cannot be written as, before the run starts."""
    suffix = Path(path).suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise PlotError(f"cannot plot to '{path}': the file name must end in .svg or .png")
    if suffix == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise PlotError(
                f"cannot plot to '{path}': PNG needs matplotlib (pip install 'soft-patch-panel[plot]'); "
                "an .svg file needs nothing"
            ) from None


def nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _si(v: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def render_svg_plot(series: Series, title: str, unit: str) -> str:
    points = [p for line in series.values() for p in line]
    t_max = max([t for t, _ in points], default=1.0) or 1.0
    v_max = max([v for _, v in points], default=1.0) or 1.0
    y_step = nice_step(v_max)
    v_top = math.ceil(v_max / y_step) * y_step
    x_step = nice_step(t_max)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + pw * t / t_max

    def y(v: float) -> float:
        return TOP + ph * (1 - v / v_top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="plot-title" font-family="sans-serif">',
        f'<title id="plot-title">{escape(title)}</title>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="15">{escape(title)}</text>',
    ]
    v = 0.0
    while v <= v_top + 1e-9:
        yy = y(v)
        out.append(f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + pw}" y2="{yy:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">{_si(v)}</text>')
        v += y_step
    t = 0.0
    while t <= t_max + 1e-9:
        xx = x(t)
        out.append(f'<line x1="{xx:.1f}" y1="{TOP + ph}" x2="{xx:.1f}" y2="{TOP + ph + 5}" stroke="#333"/>')
        out.append(f'<text x="{xx:.1f}" y="{TOP + ph + 18}" font-size="11" text-anchor="middle">{t:g}</text>')
        t += x_step
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(
        f'<text x="{LEFT + pw / 2:.0f}" y="{HEIGHT - 10}" font-size="12" text-anchor="middle">seconds</text>'
    )
    out.append(
        f'<text x="16" y="{TOP + ph / 2:.0f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + ph / 2:.0f})">{escape(unit)}</text>'
    )
    for n, (name, line) in enumerate(series.items()):
        color = PROCESS_COLORS[n % len(PROCESS_COLORS)]
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in line)
        if pts:
            out.append(
                f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2">'
                f"<title>{escape(name)}</title></polyline>"
            )
        ly = TOP + 14 + 18 * n
        out.append(f'<line x1="{LEFT + pw + 14}" y1="{ly - 4}" x2="{LEFT + pw + 34}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="3"/>')  # fmt: skip
        out.append(f'<text x="{LEFT + pw + 40}" y="{ly}" font-size="12">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_plot(path: str, series: Series, title: str, unit: str) -> None:
    """Write the chart as SVG or PNG, by the file name's suffix."""
    check_plot_path(path)
    if Path(path).suffix.lower() == ".svg":
        try:
            Path(path).write_text(render_svg_plot(series, title, unit), encoding="utf-8")
        except OSError as e:
            raise PlotError(f"cannot write '{path}': {e.strerror}") from e
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    for n, (name, line) in enumerate(series.items()):
        ax.plot([t for t, _ in line], [v for _, v in line], label=name,
                color=PROCESS_COLORS[n % len(PROCESS_COLORS)])  # fmt: skip
    ax.set_title(title)
    ax.set_xlabel("seconds")
    ax.set_ylabel(unit)
    ax.set_ylim(bottom=0)
    ax.grid(True, color="#ddd")
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as e:
        raise PlotError(f"cannot write '{path}': {e.strerror}") from e
    finally:
        plt.close(fig)
