"""Metrics and report plots: numbers checked against hand-computed values (scikit-learn's
definitions), plots checked to be real, decodable, non-blank PNGs."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from fer_ray.training.metrics import (
    confusion_matrix,
    confusion_png,
    learning_curve_png,
    normalised_confusion,
    summarise,
    trials_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["a", "b", "c", "d", "e"]
# Class 3 ("d") is predicted once but never true; class 4 ("e") appears nowhere.
LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]
PREDICTIONS = [0, 0, 1, 1, 3, 2, 2, 0, 2]
EXPECTED = np.array([
    [2, 1, 0, 0, 0],
    [0, 1, 0, 1, 0],
    [1, 0, 3, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
])


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall)


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _assert_real_image(png: bytes, min_width: int = 300) -> np.ndarray:
    pixels = _decode(png)
    assert pixels.shape[1] > min_width and pixels.shape[0] > 200
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
    assert len(np.unique(packed)) > 20  # not blank: text, colour map, lines
    return pixels


# ---------------------------------------------------------------- confusion matrix

def test_confusion_matrix_hand_example():
    confusion = confusion_matrix(LABELS, PREDICTIONS, 5)
    assert confusion.dtype == np.int64 and confusion.shape == (5, 5)
    np.testing.assert_array_equal(confusion, EXPECTED)


def test_confusion_matrix_matches_a_loop_on_random_data():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    expected = np.zeros((7, 7), np.int64)
    for true, predicted in zip(labels, predictions):
        expected[true, predicted] += 1
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 7), expected)


def test_confusion_matrix_drops_out_of_range_labels():
    confusion = confusion_matrix(LABELS + [-1, 5, 99], PREDICTIONS + [0, 1, 2], 5)
    np.testing.assert_array_equal(confusion, EXPECTED)


def test_confusion_matrix_accepts_empty_input():
    confusion = confusion_matrix([], [], 3)
    np.testing.assert_array_equal(confusion, np.zeros((3, 3)))


@pytest.mark.parametrize("labels, predictions", [
    ([0, 1], [0]),             # length mismatch
    ([0, 1], [0, 3]),          # prediction out of range
    ([0, 1], [0, -1]),
])
def test_confusion_matrix_rejects_bad_input(labels, predictions):
    with pytest.raises(ValueError):
        confusion_matrix(labels, predictions, 3)


def test_confusion_matrix_rejects_float_predictions():
    with pytest.raises(TypeError):
        confusion_matrix([0, 1], [0.2, 0.9], 3)


# ---------------------------------------------------------------- summary numbers

def test_summarise_hand_example():
    summary = summarise(EXPECTED, NAMES)
    assert summary["n"] == 9
    assert summary["accuracy"] == pytest.approx(6 / 9)
    assert summary["support"] == {"a": 3, "b": 2, "c": 4, "d": 0, "e": 0}
    recall = summary["per_class_recall"]
    assert recall["a"] == pytest.approx(2 / 3)
    assert recall["b"] == pytest.approx(1 / 2)
    assert recall["c"] == pytest.approx(3 / 4)
    assert recall["d"] is None and recall["e"] is None  # no true samples
    f1 = summary["per_class_f1"]
    expected_f1 = {
        "a": _f1(2 / 3, 2 / 3),  # precision 2/3 (one "c" predicted as "a")
        "b": _f1(1 / 2, 1 / 2),
        "c": _f1(3 / 3, 3 / 4),
        "d": 0.0,                # predicted once, never true: precision 0 -> F1 0
    }
    for name, value in expected_f1.items():
        assert f1[name] == pytest.approx(value)
    assert f1["e"] is None  # absent from truth and predictions
    # sklearn's f1_score(average="macro") without `labels`: mean over a, b, c, d.
    assert summary["macro_f1"] == pytest.approx(sum(expected_f1.values()) / 4)
    assert summary["macro_f1"] == pytest.approx(85 / 168)


def test_macro_f1_ignores_classes_absent_from_both_sides():
    with_absent = summarise(EXPECTED, NAMES)
    without = summarise(EXPECTED[:4, :4], NAMES[:4])
    assert with_absent["macro_f1"] == pytest.approx(without["macro_f1"])
    assert with_absent["accuracy"] == pytest.approx(without["accuracy"])


def test_macro_f1_counts_a_class_that_is_never_predicted():
    # true [0, 0, 1, 1], predicted [0, 0, 0, 0]: F1 a = 2/3 (P 1/2, R 1), F1 b = 0.
    summary = summarise(confusion_matrix([0, 0, 1, 1], [0, 0, 0, 0], 2), ["a", "b"])
    assert summary["per_class_f1"] == pytest.approx({"a": _f1(1 / 2, 1), "b": 0.0})
    assert summary["per_class_recall"] == pytest.approx({"a": 1.0, "b": 0.0})
    assert summary["macro_f1"] == pytest.approx(1 / 3)
    assert summary["accuracy"] == pytest.approx(1 / 2)


def test_perfect_predictions_score_one():
    labels = [0, 1, 2, 2, 1]
    summary = summarise(confusion_matrix(labels, labels, 4), list("wxyz"))
    assert summary["accuracy"] == 1.0 and summary["macro_f1"] == 1.0
    assert summary["per_class_f1"]["z"] is None


def test_empty_matrix_has_no_scores():
    summary = summarise(np.zeros((3, 3), np.int64), ["a", "b", "c"])
    assert summary["n"] == 0
    assert summary["accuracy"] is None and summary["macro_f1"] is None
    assert all(value is None for value in summary["per_class_recall"].values())


def test_summary_is_plain_json():
    summary = summarise(EXPECTED, NAMES)
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary
    assert type(summary["n"]) is int and type(summary["accuracy"]) is float
    assert all(type(v) is int for v in summary["support"].values())


def test_summarise_rejects_wrong_class_names():
    with pytest.raises(ValueError):
        summarise(EXPECTED, NAMES[:3])


def test_normalised_rows_sum_to_one_or_zero():
    rates = normalised_confusion(EXPECTED)
    np.testing.assert_allclose(rates.sum(axis=1), [1, 1, 1, 0, 0])
    assert rates[2, 2] == pytest.approx(3 / 4) and rates[0, 1] == pytest.approx(1 / 3)
    assert np.isfinite(rates).all()


# ---------------------------------------------------------------- plots

def test_confusion_png_small():
    _assert_real_image(confusion_png(EXPECTED, NAMES, title="validation"))


def test_confusion_png_42_classes():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 42, 2000)
    predictions = np.where(rng.random(2000) < 0.6, labels, rng.integers(0, 42, 2000))
    names = [f"emotion_{i:02d}" for i in range(42)]
    pixels = _assert_real_image(confusion_png(confusion_matrix(labels, predictions, 42), names))
    assert pixels.shape[1] > 900  # the figure grows with the class count, to fit 42 labels


def test_learning_curve_png():
    history = [
        {"epoch": 1, "train_loss": 1.9, "val_loss": 1.7, "val_accuracy": 0.3, "val_macro_f1": 0.2},
        {"epoch": 2, "train_loss": 1.4, "val_loss": None, "val_accuracy": 0.45},
        {"epoch": 3, "train_loss": 1.1, "val_loss": 1.2, "val_accuracy": 0.5,
         "val_macro_f1": float("nan")},
    ]
    _assert_real_image(learning_curve_png(history))


def test_learning_curve_png_single_epoch_and_empty():
    one = [{"epoch": 0, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.4,
            "val_macro_f1": 0.3}]
    _assert_real_image(learning_curve_png(one))
    no_epochs = [{"epoch": float("nan"), "train_loss": 1.0}, {"train_loss": 0.8}]  # pandas rows
    _assert_real_image(learning_curve_png(no_epochs))
    _assert_real_image(learning_curve_png([]))


def test_trials_png_with_unequal_lengths():
    rng = np.random.default_rng(2)
    trials, labels = {}, {}
    for i in range(64):  # ASHA-like: most stop after 1 or 3 epochs, a few run to 9
        epochs = int(rng.choice([1, 3, 9]))
        trials[f"trial_{i}"] = [{"epoch": e, "val_macro_f1": float(rng.random())}
                                for e in range(1, epochs + 1)]
        labels[f"trial_{i}"] = f"trial_{i} dexpression_fer lr=1e-{i % 4 + 2}"
    trials["trial_crashed"] = []
    _assert_real_image(trials_png(trials, labels=labels))
    _assert_real_image(trials_png({"t0": trials["trial_0"], "t1": trials["trial_1"]}))


def test_trials_png_other_metric_and_mode():
    trials = {"a": [{"epoch": 1, "val_loss": 1.2}, {"epoch": 2, "val_loss": 0.9}],
              "b": [{"epoch": 1, "val_loss": 1.5}]}
    _assert_real_image(trials_png(trials, metric="val_loss", mode="min"))
    with pytest.raises(ValueError):
        trials_png(trials, mode="best")
