"""PNG figures, drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas rather than
through pyplot: pyplot keeps global state (current figure, chosen backend) that is not safe
in Ray workers running several tasks in one process, and its figures would have to be
closed by hand to free their memory."""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
TIMELINE_MAX_TRACKS = 8  # a video's timeline shows its longest tracks, this many at most
THUMBNAIL_RATIO = 7  # a timeline panel is this many times as wide as its face thumbnail


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
    """Distinct colours for at most 10 series (matplotlib's tab10)."""
    from matplotlib import colormaps
    return [colormaps["tab10"](i % 10) for i in range(count)]


def timeline_png(tracks: dict[int, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str],
                 title: str = "", thumbnails: dict[int, np.ndarray] | None = None) -> bytes:
    """One panel per track (the longest TIMELINE_MAX_TRACKS): each class's smoothed probability
    over the video's time, on one shared time axis. tracks: id -> (times_s, probabilities (n, C)).
    With `thumbnails` (id -> grey or RGB uint8 face), each panel has its track's face at its left
    (a blank square for a track without one), in a narrow column of its own."""
    shown = sorted(tracks, key=lambda t: -len(tracks[t][0]))[:TIMELINE_MAX_TRACKS] or []
    rows = max(len(shown), 1)
    height = 1.2 + 1.6 * rows
    # drawn once per video by the labelling job: fixed margins (in inches, as the height grows)
    fig = figure(9, height, layout=None)
    # wspace: room for the panels' tick labels and "track N" between the faces and the panels
    fig.subplots_adjust(left=0.01 if thumbnails is not None else 0.08, right=0.98, top=1 - 0.45 / height,
                        bottom=0.55 / height, hspace=0.3, wspace=0.16)
    if thumbnails is None:
        axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    else:
        grid = fig.subplots(rows, 2, squeeze=False, gridspec_kw={"width_ratios": (1, THUMBNAIL_RATIO)})
        axes = grid[:, 1]
        for ax in axes[1:]:
            ax.sharex(axes[0])
        for ax, track in zip(grid[:, 0], sorted(shown) or [None]):
            show_thumbnail(ax, thumbnails.get(track))
    colours = palette(len(class_names))
    for ax, track in zip(axes, sorted(shown)):
        times, probabilities = tracks[track]
        for i, name in enumerate(class_names):
            ax.plot(times, np.asarray(probabilities)[:, i], color=colours[i], label=name, linewidth=1.2)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {track}")
    if not shown:
        axes[0].text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlabel("time in the video (s)")
    axes[0].set_title(title, fontsize=10)
    if shown:
        axes[0].legend(loc="upper right", fontsize=7, ncol=min(len(class_names), 4))
    return png(fig)


def show_thumbnail(ax, face: np.ndarray | None) -> None:
    """A face in a panel of its own, without axes; nothing but the blank panel without one."""
    ax.set_axis_off()
    if face is not None:
        ax.imshow(face, cmap="gray" if face.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
