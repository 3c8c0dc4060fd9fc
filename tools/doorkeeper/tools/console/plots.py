"""Plots drawn on the server as inline SVG (no chart script in the browser).

Colours come from CSS classes in static/console.css, so the page keeps a Content-Security-Policy
without inline styles. Every label is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

from doorkeeper.v1 import doorkeeper_pb2 as pb

GRANTED = ("granted_face", "granted_card", "granted_pin")
REFUSED = (
    "refused_unknown_face",
    "refused_not_allowed_now",
    "refused_expired",
    "refused_stale",
    "refused_ambiguous",
    "refused_credential",
    "refused_other",
)
SHADOW = ("shadow_would_grant", "shadow_would_refuse")


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar (may be empty)
    segments: tuple[tuple[str, float], ...]  # (css class, value), stacked from the bottom
    title: str  # hover text


def bar_chart(bars: list[Bar], y_unit: str, width: int = 640, height: int = 160, caption: str = "") -> Markup:
    """Stacked bars with a y axis of 0..max; empty data draws an empty frame and says so."""
    left, bottom, top = 44, 22, 8
    plot_w, plot_h = width - left - 4, height - bottom - top
    peak = max((sum(v for _, v in b.segments) for b in bars), default=0.0)
    scale = plot_h / peak if peak > 0 else 0.0
    out = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(caption)}">'
    ]
    out.append(f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width - 4}" y2="{top + plot_h}"/>')
    out.append(f'<text class="tick" x="{left - 4}" y="{top + 8}" text-anchor="end">{_num(peak)}</text>')
    out.append(f'<text class="tick" x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>')
    out.append(f'<text class="tick" x="2" y="{top + plot_h // 2}">{escape(y_unit)}</text>')
    if not bars or peak == 0:
        empty = "no data" if not bars else "nothing to draw yet"
        out.append(f'<text class="tick" x="{left + 8}" y="{top + plot_h // 2}">{empty}</text>')
    step = plot_w / max(len(bars), 1)
    bar_w = max(step * 0.8, 1.0)
    every = max(1, len(bars) // 12)  # at most ~12 labels under the axis
    for i, b in enumerate(bars):
        x = left + i * step + (step - bar_w) / 2
        y = float(top + plot_h)
        out.append(f"<g><title>{escape(b.title)}</title>")
        for css, value in b.segments:
            h = value * scale
            if h > 0:
                y -= h
                out.append(
                    f'<rect class="{escape(css)}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                    f'height="{h:.1f}"/>'
                )
        out.append("</g>")
        if b.label and i % every == 0:
            out.append(
                f'<text class="tick" x="{x + bar_w / 2:.1f}" y="{height - 6}" '
                f'text-anchor="middle">{escape(b.label)}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every label and class above went through escape()


def _num(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def decisions_chart(door: pb.DoorDecisions) -> Markup:
    """One door's decisions per hour: granted, refused and shadow (decided, not actuated)."""
    bars = []
    for h in door.hours:
        granted = sum(getattr(h, f) for f in GRANTED)
        refused = sum(getattr(h, f) for f in REFUSED)
        shadow = sum(getattr(h, f) for f in SHADOW)
        at = datetime.fromtimestamp(h.hour, UTC)
        bars.append(
            Bar(
                at.strftime("%H"),
                (("granted", granted), ("refused", refused), ("shadow", shadow)),
                f"{at:%Y-%m-%d %H}:00 UTC: {granted} granted, {refused} refused, {shadow} shadow decisions",
            )
        )
    return bar_chart(bars, "per hour", caption=f"decisions per hour at {door.name}")


def convergence_chart(rows: list[tuple[int, float | None]]) -> Markup:
    """Seconds until every active door held each version (None: not yet)."""
    bars = [
        Bar(
            f"v{v}",
            (("converged", s),) if s is not None else (("pending", 0.0),),
            f"version {v}: " + (f"all doors in {s:.1f} s" if s is not None else "not every door yet"),
        )
        for v, s in rows
    ]
    return bar_chart(bars, "seconds", caption="time to converge per change")
