"""Evaluation metrics and report plots for emotion classifiers.

Everything works from a confusion matrix, so a metric is computed in one place and
shards of a validation set can be combined by adding their matrices. Accuracy and
macro-F1 follow scikit-learn's definitions (``accuracy_score``,
``f1_score(average="macro")``) without depending on it.

Plots are drawn as fer_ray/plots.py draws every figure (no pyplot).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter

from fer_ray.plots import figure, palette, png

ANNOTATE_MAX_CLASSES = 12  # above this, cell percentages are unreadable
LEGEND_MAX_TRIALS = 10     # trials_png names only this many (the best) in its legend


# ---------------------------------------------------------------- numbers

def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """int64 (num_classes, num_classes) counts: rows are the true class, columns the
    predicted one.

    Entries whose label is outside 0..num_classes-1 are dropped, so -1 (or any other
    "unlabelled" marker) can mark samples that must not count. A prediction outside
    that range is a bug in the model head and raises instead of being dropped.
    """
    labels, predictions = _int_vector(labels, "labels"), _int_vector(predictions, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(f"confusion_matrix: {labels.size} labels but {predictions.size} predictions")
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    if predictions.size and (predictions.min() < 0 or predictions.max() >= num_classes):
        raise ValueError(f"confusion_matrix: predictions outside 0..{num_classes - 1}")
    keep = (labels >= 0) & (labels < num_classes)
    flat = labels[keep] * num_classes + predictions[keep]
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.astype(np.int64).reshape(num_classes, num_classes)


def _int_vector(values, name: str) -> np.ndarray:
    """Flat int64 array; refuses floats so that probabilities or logits passed by
    mistake fail loudly instead of being truncated to class 0."""
    array = np.asarray(values).ravel()
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"confusion_matrix: {name} must be integers, got {array.dtype}")
    return array.astype(np.int64, copy=False)


def summarise(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
    """JSON-ready summary of a confusion matrix.

    Undefined values (0/0) become None rather than NaN, because NaN is not valid JSON:
    recall is undefined for a class with no true samples, F1 only for a class absent
    from both the truth and the predictions. A class that was predicted but never
    occurs scores F1 = 0 (its precision is 0), as in scikit-learn.

    ``macro_f1`` is the mean F1 over the classes present in the truth or in the
    predictions, i.e. over the classes whose F1 is not None. That is what
    ``sklearn.metrics.f1_score(y_true, y_pred, average="macro")`` does when it is not
    given ``labels``: a class that never appears on either side (e.g. an emotion a
    small validation shard happens not to contain) says nothing about the model and
    would otherwise drag the mean towards 0 (or 1) arbitrarily.

    An empty matrix gives accuracy and macro_f1 None.
    """
    confusion = _square(confusion, class_names)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    n = int(support.sum())
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)  # 2TP / (2TP + FP + FN)
    defined = ~np.isnan(f1)
    names = [str(name) for name in class_names]
    return {
        "accuracy": float(tp.sum() / n) if n else None,
        "macro_f1": float(f1[defined].mean()) if defined.any() else None,
        "per_class_recall": dict(zip(names, _json_floats(recall))),
        "per_class_f1": dict(zip(names, _json_floats(f1))),
        "support": {name: int(count) for name, count in zip(names, support)},
        "n": n,
    }


def normalised_confusion(confusion: np.ndarray) -> np.ndarray:
    """Rows divided by their totals, so each row reads as "where did the samples of
    this true class go" regardless of class imbalance. Rows with no samples stay 0."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)


def _square(confusion: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {confusion.shape}")
    if len(class_names) != confusion.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {confusion.shape[0]}-class matrix")
    return confusion


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with NaN where the denominator is 0."""
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.full_like(denominator, np.nan),
                     where=denominator > 0)


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


# ---------------------------------------------------------------- plots

def confusion_png(confusion: np.ndarray, class_names: Sequence[str], title: str = "") -> bytes:
    """PNG of the row-normalised confusion matrix.

    Normalising rows keeps rare emotions visible next to frequent ones; each row's
    sample count is put on its tick label because 100% of 1 sample means little.
    The figure and fonts scale with the number of classes so 42 still fit; cell
    percentages are only written up to ANNOTATE_MAX_CLASSES classes.
    """
    confusion = _square(confusion, class_names)
    k = confusion.shape[0]
    rates = normalised_confusion(confusion)
    side = min(max(6.0, 0.25 * k + 3.0), 18.0)
    fig = figure(side + 1.5, side)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    font = 10 if k <= ANNOTATE_MAX_CLASSES else 8 if k <= 24 else 7
    ticks = np.arange(k)
    ax.set_xticks(ticks, [str(name) for name in class_names], fontsize=font,
                  rotation=45 if k <= ANNOTATE_MAX_CLASSES else 90, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(ticks, [f"{name} ({count})" for name, count in
                          zip(class_names, confusion.sum(axis=1))], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (samples)")
    if title:
        ax.set_title(title)
    if k <= ANNOTATE_MAX_CLASSES:
        _annotate_cells(ax, rates, confusion.sum(axis=1) > 0, font - 1)
    colour_bar = fig.colorbar(image, ax=ax, format=PercentFormatter(xmax=1.0), shrink=0.8)
    colour_bar.set_label("share of the true class")
    return png(fig)


def _annotate_cells(ax, rates: np.ndarray, has_samples: np.ndarray, font: int) -> None:
    """Percentage in each cell of rows that have samples; white on dark cells."""
    for row in np.flatnonzero(has_samples):
        for col, rate in enumerate(rates[row]):
            ax.text(col, row, f"{100 * rate:.0f}%", ha="center", va="center", fontsize=font,
                    color="white" if rate > 0.5 else "black")


def learning_curve_png(history: list[dict]) -> bytes:
    """PNG with losses per epoch on the left and validation accuracy / macro-F1 on a
    fixed 0..1 axis on the right (so runs can be compared by eye). Missing or None
    values are skipped point by point; markers keep a 1-epoch run visible."""
    fig = figure(12.0, 4.5)
    losses, scores = fig.subplots(1, 2)
    _plot_keys(losses, history, ("train_loss", "val_loss"), "loss")
    _plot_keys(scores, history, ("val_accuracy", "val_macro_f1"), "score")
    scores.set_ylim(0.0, 1.0)
    return png(fig)


def _plot_keys(ax, history: list[dict], keys: Sequence[str], ylabel: str) -> None:
    for key in keys:
        epochs, values = _series(history, key)
        if values:
            ax.plot(epochs, values, marker="o", markersize=4, label=key)
    _epoch_axis(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _epoch_axis(ax) -> None:
    """Whole-number epoch ticks, on at least two epochs of range: a 1-epoch run would
    otherwise get ticks like 0.96 .. 1.04. Call after plotting."""
    ax.set_xlabel("epoch")
    low, high = ax.get_xlim()
    if high - low < 2:
        middle = (low + high) / 2
        ax.set_xlim(middle - 1, middle + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _series(history: Sequence[Mapping], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the entries where `key` is a finite number; an entry with
    no epoch (None, or NaN from a pandas frame) is placed at its position in the list."""
    epochs, values = [], []
    for position, entry in enumerate(history):
        value = entry.get(key)
        if value is None or not math.isfinite(value):
            continue
        epoch = entry.get("epoch")
        epochs.append(position if epoch is None or not math.isfinite(epoch) else epoch)
        values.append(float(value))
    return epochs, values


def trials_png(trials: dict[str, list[dict]], metric: str = "val_macro_f1",
               labels: dict[str, str] | None = None, mode: str = "max") -> bytes:
    """PNG comparing tuning trials: `metric` per epoch, one line per trial (trials that
    ASHA stopped early end early), and the final value of each trial as bars, best
    first. `mode` ("max" or "min", as in Ray Tune) says which end is best.

    With many trials only the best LEGEND_MAX_TRIALS are coloured and named; the rest
    are drawn thin and grey so the shape of the search stays visible without a legend
    that covers the plot. Trials that never reported the metric are left out and
    counted in the title.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"trials_png: mode must be 'max' or 'min', got {mode!r}")
    labels = labels or {}
    series = {name: _series(history, metric) for name, history in trials.items()}
    finals = {name: values[-1] for name, (_, values) in series.items() if values}
    ranked = sorted(finals, key=finals.get, reverse=(mode == "max"))
    fig = figure(15.0, max(5.0, 0.18 * len(ranked) + 1.5))
    lines, bars = fig.subplots(1, 2, width_ratios=[3, 2])
    _plot_trial_lines(lines, series, ranked, labels, metric)
    _plot_final_bars(bars, finals, ranked, labels, metric)
    missing = len(trials) - len(ranked)
    fig.suptitle(f"{len(ranked)} trials" + (f", {missing} without {metric}" if missing else ""))
    return png(fig)


def _plot_trial_lines(ax, series: dict, ranked: list[str], labels: Mapping[str, str],
                      metric: str) -> None:
    named = ranked[:LEGEND_MAX_TRIALS]
    colours = dict(zip(named, palette(len(named))))
    for name in reversed(ranked):  # best drawn last, on top
        epochs, values = series[name]
        if name in colours:
            ax.plot(epochs, values, marker="o", markersize=4, color=colours[name],
                    label=labels.get(name, name))
        else:
            ax.plot(epochs, values, marker=".", markersize=2, linewidth=0.8,
                    color="0.6", alpha=0.6)
    _epoch_axis(ax)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if named:
        handles, texts = ax.get_legend_handles_labels()
        title = f"best {len(named)} of {len(ranked)}" if len(ranked) > len(named) else None
        ax.legend(handles[::-1], texts[::-1], fontsize=7 if len(named) > 5 else 9,
                  title=title, title_fontsize=8)


def _plot_final_bars(ax, finals: dict[str, float], ranked: list[str],
                     labels: Mapping[str, str], metric: str) -> None:
    font = 9 if len(ranked) <= 16 else 6
    positions = np.arange(len(ranked))
    colours = palette(min(len(ranked), LEGEND_MAX_TRIALS))
    colours += ["0.6"] * (len(ranked) - len(colours))
    ax.barh(positions, [finals[name] for name in ranked], color=colours)
    ax.set_yticks(positions, [labels.get(name, name) for name in ranked], fontsize=font)
    ax.invert_yaxis()  # best at the top
    for position, name in zip(positions, ranked):
        ax.text(finals[name], position, f" {finals[name]:.3f}", va="center", fontsize=font)
    ax.set_xlabel(f"final {metric}")
    ax.margins(x=0.15)
    ax.grid(axis="x", alpha=0.3)
