"""Charts for the pages, drawn by the server as inline SVG: no script, no network fetch, visible at first paint.

Plain functions from rows (as a stored snapshot holds them) to SVG markup. Under the Content-Security-Policy
(`style-src 'self'`) nothing here may carry a `style` attribute: colours come from classes styled by
static/css/arena.css (so dark mode follows the system), or, for data-driven colours (the heatmap's cells), from
SVG presentation attributes such as `fill=`. Every chart is an `<svg role="img">` with a title and a
description, and the page beside it holds the same numbers as text (tables), so nothing is said by colour alone.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable, NamedTuple, Sequence

from markupsafe import Markup, escape

ROW_HEIGHT = 16  # pixels per model in the rating chart
LABEL_WIDTH = 190  # room for a model's name left of the plot
FONT_SIZE = 11


def _f(value: float) -> str:
    """A coordinate, short: SVG needs no more than a tenth of a pixel."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values between low and high (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    ticks, value = [], first
    while value <= high + 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.3g}"


class _Scale(NamedTuple):
    """A linear map from data values to pixels."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return self.start + (value - self.low) / span * (self.end - self.start)


def _padded(values: Iterable[float], fraction: float = 0.05) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    pad = (high - low) * fraction or max(abs(low) * 0.05, 1.0)
    return low - pad, high + pad


def _svg(width: float, height: float, title: str, description: str, body: list[str], css: str) -> Markup:
    ident = "c" + hashlib.sha1(f"{title}|{description}".encode()).hexdigest()[:10]
    return Markup(
        f'<svg class="chart {css}" viewBox="0 0 {_f(width)} {_f(height)}" width="{_f(width)}" height="{_f(height)}" '
        f'role="img" aria-labelledby="{ident}t {ident}d" xmlns="http://www.w3.org/2000/svg" '
        f'font-size="{FONT_SIZE}">'
        f'<title id="{ident}t">{escape(title)}</title><desc id="{ident}d">{escape(description)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", css: str = "label", extra: str = "") -> str:
    return f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" class="{css}"{extra}>{escape(text)}</text>'


def _clip(name: str, limit: int = 30) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------ ratings


def rating_chart(rows: Sequence[dict], *, title: str = "Ratings with 95% intervals") -> Markup:
    """Every model's rating as a dot on its 95 % interval, best first: the picture people look at first.

    An interval end that the data do not bound (stored as null) runs to the plot's edge and ends in an arrow.
    Provisional ratings are drawn hollow.
    """
    rows = sorted(rows, key=lambda r: -r["rating"])
    width, plot_end, top = 680.0, 664.0, 30.0
    height = top + ROW_HEIGHT * max(len(rows), 1) + 10
    low, high = _padded([v for r in rows for v in (r["ci_low"], r["ci_high"], r["rating"])])
    x = _Scale(low, high, LABEL_WIDTH + 10, plot_end)
    body = []
    for tick in _ticks(low, high):
        px = x(tick)
        body.append(f'<line x1="{_f(px)}" x2="{_f(px)}" y1="{_f(top - 6)}" y2="{_f(height - 6)}" class="grid"/>')
        body.append(_text(px, top - 10, _number(tick), anchor="middle", css="axis"))
    for i, row in enumerate(rows):
        cy = top + ROW_HEIGHT * i + ROW_HEIGHT / 2
        lo = x(row["ci_low"]) if row["ci_low"] is not None else x.start
        hi = x(row["ci_high"]) if row["ci_high"] is not None else x.end
        shown_low = "unbounded" if row["ci_low"] is None else f"{row['ci_low']:.1f}"
        shown_high = "unbounded" if row["ci_high"] is None else f"{row['ci_high']:.1f}"
        tip = (
            f"{row['model']}: {row['rating']:.1f} (95% interval {shown_low} to {shown_high}), "
            f"{row['battles']} battles{', provisional' if row.get('provisional') else ''}"
        )
        kind = "dot provisional" if row.get("provisional") else "dot"
        body.append(f'<g class="row"><title>{escape(tip)}</title>')
        if i % 2 == 0:
            body.append(
                f'<rect x="0" y="{_f(cy - ROW_HEIGHT / 2)}" width="{_f(width)}" height="{ROW_HEIGHT}" class="band"/>'
            )
        body.append(_text(LABEL_WIDTH, cy + 4, _clip(row["model"]), anchor="end"))
        body.append(f'<line x1="{_f(lo)}" x2="{_f(hi)}" y1="{_f(cy)}" y2="{_f(cy)}" class="ci"/>')
        for end, bounded, direction in ((lo, row["ci_low"] is not None, -1), (hi, row["ci_high"] is not None, 1)):
            if bounded:
                body.append(f'<line x1="{_f(end)}" x2="{_f(end)}" y1="{_f(cy - 4)}" y2="{_f(cy + 4)}" class="ci"/>')
            else:
                body.append(f'<path d="M{_f(end)} {_f(cy)} l{_f(-6 * direction)} -4 v8 z" class="open"/>')
        body.append(f'<circle cx="{_f(x(row["rating"]))}" cy="{_f(cy)}" r="4" class="{kind}"/></g>')
    description = (
        f"{len(rows)} models from best to worst; each dot is a rating on the Elo scale, each line its "
        "95% bootstrap interval. The table holds the same numbers."
    )
    return _svg(width, height, title, description, body, "rating-chart")


# ------------------------------------------------------------------------------------------------ win rates


def predicted_win_rate(rating_a: float, rating_b: float) -> float:
    """P(a beats b) under the Bradley-Terry model on the Elo scale: 1 / (1 + 10^((R_b - R_a) / 400))."""
    return 1.0 / (1.0 + 10.0 ** ((rating_b - rating_a) / 400.0))


def _diverging(p: float) -> tuple[str, str]:
    """A cell colour for a win probability (blue below one half, white at it, red above) and a text colour
    that keeps at least 4.5:1 contrast on it."""
    t = max(-1.0, min(1.0, (p - 0.5) * 2))
    base = (255, 255, 255)
    target = (178, 24, 43) if t > 0 else (33, 102, 172)
    rgb = tuple(round(b + (c - b) * abs(t)) for b, c in zip(base, target))

    def luminance(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    lum = 0.2126 * luminance(rgb[0]) + 0.7152 * luminance(rgb[1]) + 0.0722 * luminance(rgb[2])
    text = "#000000" if lum > 0.179 else "#ffffff"  # the brighter of the two contrasts, >= 4.58:1 either way
    return "#%02x%02x%02x" % rgb, text


def win_rate_heatmap(
    rows: Sequence[dict], *, limit: int = 15, title: str = "Predicted win rates between the top models"
) -> Markup:
    """The probability that the row's model beats the column's, from the snapshot's ratings, for the `limit`
    best-rated models: derived from the stored ratings by the model's own formula, never refitted."""
    top = sorted(rows, key=lambda r: -r["rating"])[:limit]
    n = len(top)
    cell, label = 34.0, 170.0
    width = label + cell * n + 10
    height = label + cell * n + 10
    body = []
    for j, row in enumerate(top):
        cx = label + cell * j + cell / 2
        body.append(
            f'<text x="0" y="0" class="label" text-anchor="start" '
            f'transform="translate({_f(cx + 4)} {_f(label - 6)}) rotate(-60)">{escape(_clip(row["model"], 26))}'
            f"</text>"
        )
    for i, a in enumerate(top):
        cy = label + cell * i
        body.append(_text(label - 6, cy + cell / 2 + 4, _clip(a["model"], 26), anchor="end"))
        for j, b in enumerate(top):
            cx = label + cell * j
            if i == j:
                body.append(f'<rect x="{_f(cx)}" y="{_f(cy)}" width="{_f(cell)}" height="{_f(cell)}" class="diag"/>')
                continue
            p = predicted_win_rate(a["rating"], b["rating"])
            fill, ink = _diverging(p)
            body.append(
                f"<g><title>{escape(a['model'])} beats {escape(b['model'])}: {p:.2f}</title>"
                f'<rect x="{_f(cx)}" y="{_f(cy)}" width="{_f(cell)}" height="{_f(cell)}" fill="{fill}" '
                f'class="cell"/>'
                f'<text x="{_f(cx + cell / 2)}" y="{_f(cy + cell / 2 + 4)}" text-anchor="middle" '
                f'fill="{ink}" font-size="10">{p:.2f}</text></g>'
            )
    description = (
        f"A {n} by {n} grid: the cell in row A, column B is the probability that A beats B, "
        "1 / (1 + 10^((rating B - rating A) / 400)), from the snapshot's ratings."
    )
    return _svg(width, height, title, description, body, "heatmap")


# ------------------------------------------------------------------------------------------------ history


def history_chart(points: Sequence[dict], *, title: str = "Rating across snapshots") -> Markup:
    """A model's rating in each snapshot that rated it (x: snapshot version), with its 95 % interval as bars."""
    width, height, left, right, top, bottom = 640.0, 260.0, 56.0, 624.0, 16.0, 226.0
    versions = [p["version"] for p in points]
    low, high = _padded([v for p in points for v in (p["ci_low"], p["ci_high"], p["rating"])])
    y = _Scale(low, high, bottom, top)
    vlow, vhigh = (min(versions), max(versions)) if versions else (0, 1)
    x = _Scale(vlow - 0.5, vhigh + 0.5, left, right)
    body = [f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" class="axis-line"/>']
    for tick in _ticks(low, high, 5):
        py = y(tick)
        body.append(f'<line x1="{left}" x2="{right}" y1="{_f(py)}" y2="{_f(py)}" class="grid"/>')
        body.append(_text(left - 6, py + 4, _number(tick), anchor="end", css="axis"))
    step = max(1, math.ceil(len(versions) / 12))
    for i, version in enumerate(versions):
        if i % step == 0 or i == len(versions) - 1:
            body.append(_text(x(version), bottom + 16, f"v{version}", anchor="middle", css="axis"))
    path = []
    for p in points:
        px, py = x(p["version"]), y(p["rating"])
        lo = y(p["ci_low"]) if p["ci_low"] is not None else bottom
        hi = y(p["ci_high"]) if p["ci_high"] is not None else top
        body.append(
            f"<g><title>snapshot {p['version']}: {p['rating']:.1f}</title>"
            f'<line x1="{_f(px)}" x2="{_f(px)}" y1="{_f(lo)}" y2="{_f(hi)}" class="ci"/>'
            f'<circle cx="{_f(px)}" cy="{_f(py)}" r="4" class="dot"/></g>'
        )
        path.append(f"{'M' if not path else 'L'}{_f(px)} {_f(py)}")
    if len(path) > 1:
        body.insert(1, f'<path d="{" ".join(path)}" class="trend" fill="none"/>')
    body.append(_text(12, top + 4, "rating", css="axis"))
    body.append(_text((left + right) / 2, height - 4, "snapshot version", anchor="middle", css="axis"))
    description = f"Rating with its 95% interval in each of {len(points)} snapshots; the table holds the numbers."
    return _svg(width, height, title, description, body, "history-chart")


# ------------------------------------------------------------------------------------------------ board


class Threshold(NamedTuple):
    """A milestone's line on a scatter plot: a value on one axis, named, with the side that passes."""

    value: float
    label: str
    passes: str  # "above" or "below" (safety), "right" (capability)


def capability_safety_scatter(
    points: Sequence[dict],
    *,
    metric: str,
    safety_lines: Sequence[Threshold] = (),
    capability_lines: Sequence[Threshold] = (),
    flagged: bool = False,
    note: str = "",
) -> Markup:
    """Capability (the overall rating, x) against one safety metric (y) across models, both with their 95 %
    intervals, the milestones' thresholds drawn as dashed lines, and the safetywashing flag when the metric
    tracks capability.

    Each point is {"model", "rating", "ci_low", "ci_high", "value", "value_low", "value_high", "met"}.
    """
    width, height, left, right, top, bottom = 640.0, 400.0, 60.0, 620.0, 34.0, 350.0
    xs = [v for p in points for v in (p["rating"], p["ci_low"], p["ci_high"])] + [t.value for t in capability_lines]
    ys = [v for p in points for v in (p["value"], p["value_low"], p["value_high"])] + [t.value for t in safety_lines]
    x_low, x_high = _padded(xs)
    y_low, y_high = _padded(ys)
    x, y = _Scale(x_low, x_high, left, right), _Scale(y_low, y_high, bottom, top)
    body = [f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" class="plot"/>']
    for tick in _ticks(x_low, x_high, 6):
        px = x(tick)
        body.append(f'<line x1="{_f(px)}" x2="{_f(px)}" y1="{top}" y2="{bottom}" class="grid"/>')
        body.append(_text(px, bottom + 14, _number(tick), anchor="middle", css="axis"))
    for tick in _ticks(y_low, y_high, 5):
        py = y(tick)
        body.append(f'<line x1="{left}" x2="{right}" y1="{_f(py)}" y2="{_f(py)}" class="grid"/>')
        body.append(_text(left - 6, py + 4, _number(tick), anchor="end", css="axis"))
    for line in capability_lines:
        px = x(line.value)
        body.append(f'<line x1="{_f(px)}" x2="{_f(px)}" y1="{top}" y2="{bottom}" class="threshold"/>')
        body.append(_text(px + 4, top + 12, _clip(line.label, 40), css="threshold-label"))
    for line in safety_lines:
        py = y(line.value)
        body.append(f'<line x1="{left}" x2="{right}" y1="{_f(py)}" y2="{_f(py)}" class="threshold"/>')
        arrow = "↑" if line.passes == "above" else "↓"
        body.append(_text(right - 4, py - 4, f"{_clip(line.label, 40)} {arrow}", anchor="end", css="threshold-label"))
    for p in points:
        px, py = x(p["rating"]), y(p["value"])
        xl = x(p["ci_low"]) if p["ci_low"] is not None else left
        xh = x(p["ci_high"]) if p["ci_high"] is not None else right
        yl = y(p["value_low"]) if p["value_low"] is not None else py
        yh = y(p["value_high"]) if p["value_high"] is not None else py
        tip = f"{p['model']}: rating {p['rating']:.1f}, {metric} {p['value']:g}"
        kind = "dot met" if p.get("met") else "dot"
        body.append(
            f"<g><title>{escape(tip)}</title>"
            f'<line x1="{_f(xl)}" x2="{_f(xh)}" y1="{_f(py)}" y2="{_f(py)}" class="ci"/>'
            f'<line x1="{_f(px)}" x2="{_f(px)}" y1="{_f(yl)}" y2="{_f(yh)}" class="ci"/>'
            f'<circle cx="{_f(px)}" cy="{_f(py)}" r="4.5" class="{kind}"/></g>'
        )
        if len(points) <= 12 or p.get("met"):
            body.append(_text(px + 6, py - 6, _clip(p["model"], 22), css="point-label"))
    body.append(
        _text(
            (left + right) / 2,
            height - 8,
            "capability: rating on the overall board (95% interval)",
            anchor="middle",
            css="axis",
        )
    )
    body.append(_text(left, 14, f"{metric} (95% interval)", css="axis"))
    if flagged:
        body.append(_text(right, 14, "flagged: tracks capability", anchor="end", css="flag"))
    description = (
        f"{len(points)} models: capability rating against {metric}, with both intervals as bars; "
        f"dashed lines are milestone thresholds. {note}"
    ).strip()
    return _svg(width, height, f"Capability against {metric}", description, body, "scatter")
