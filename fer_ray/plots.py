"""PNG figures, drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas rather than
through pyplot: pyplot keeps global state (current figure, chosen backend) that is not safe
in Ray workers running several tasks in one process, and its figures would have to be
closed by hand to free their memory."""
from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fer_ray.vision.chart import PALETTE

DPI = 100


def figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A Figure bound to the Agg canvas, without going through pyplot. `layout` None: margins
    set by the caller (constrained layout measures every label: a third of a small plot's time)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def palette(count: int) -> list:
    """Distinct colours for at most 10 series, as matplotlib takes them: the video timeline's
    (matplotlib's tab10), so a class has one colour in every picture."""
    return [tuple(c / 255 for c in PALETTE[i % len(PALETTE)]) for i in range(count)]
