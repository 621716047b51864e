"""The shift benchmark: deterministic acquisition shifts and threshold rules judged under them."""

from functools import partial

import numpy as np
import pytest

from pneumo.metrics import binary_metrics, choose_threshold
from pneumo.shift import (SHIFTS, THRESHOLD_RULES_UNDER_SHIFT, Shift, apply_shift, choose_threshold_rule,
                          compare_threshold_rules, multiclass_shift_metrics, threshold_under_shift,
                          robustness_summary, score_under_shifts)


@pytest.fixture
def films():
    """Six 32-px "films": a mid-grey field with a bright centred square, some texture."""
    rng = np.random.default_rng(0)
    x = np.full((6, 32, 32), 100, np.uint8)
    x[:, 10:22, 10:22] = 200
    return np.clip(x + rng.integers(-20, 20, x.shape), 0, 255).astype(np.uint8)


def test_every_shift_keeps_shape_and_type_and_repeats_exactly(films):
    for shift in SHIFTS:
        out = apply_shift(films, shift)
        assert out.shape == films.shape and out.dtype == np.uint8, shift.name
        assert np.array_equal(out, apply_shift(films, shift)), shift.name
    assert np.array_equal(apply_shift(films, SHIFTS[0]), films)
    assert len({s.name for s in SHIFTS}) == len(SHIFTS) and SHIFTS[0].kind == "none"


def test_shifts_change_what_they_say(films):
    mean = films.mean()
    assert apply_shift(films, Shift("d", "exposure", "gamma", 1.5)).mean() < mean - 10
    assert apply_shift(films, Shift("b", "exposure", "gamma", 0.67)).mean() > mean + 10
    assert apply_shift(films, Shift("c", "exposure", "contrast", 0.5)).std() < 0.6 * films.std()
    bordered = apply_shift(films, Shift("m", "border", "border", 0.1))
    assert (bordered[:, :3] == 0).all() and (bordered[:, :, -3:] == 0).all()
    assert np.array_equal(bordered[:, 4:-4, 4:-4], films[:, 4:-4, 4:-4])
    bright = lambda x: (x > 150).sum()  # noqa: E731 - area of the bright square
    assert bright(apply_shift(films, Shift("z", "framing", "zoom", 1.3))) > 1.3 * bright(films)
    moved = apply_shift(films, Shift("t", "framing", "translate", 0.125))  # 4 px right and down
    assert abs(moved[:, 14:26, 14:26].astype(int).mean() - films[:, 10:22, 10:22].mean()) < 5
    assert (apply_shift(films, Shift("r", "framing", "rotate", 30.0))[:, 0, 0] == 0).all()  # corners enter black
    noisy = apply_shift(films, Shift("n", "sharpness", "noise", 0.05), seed=1)
    assert not np.array_equal(noisy, apply_shift(films, Shift("n", "sharpness", "noise", 0.05), seed=2))


def test_unknown_kind_and_bad_images_are_rejected(films):
    with pytest.raises(ValueError, match="unknown shift kind 'warp'"):
        apply_shift(films, Shift("w", "framing", "warp", 1.0))
    with pytest.raises(ValueError, match="uint8"):
        apply_shift(films.astype(np.float32), SHIFTS[0])


def test_score_under_shifts_scores_every_shifted_copy(films):
    y = np.array([0, 0, 0, 1, 1, 1])
    films = films.copy()
    films[3:] = np.clip(films[3:].astype(int) + 40, 0, 255)  # the sick films are brighter
    score = lambda x: x.reshape(len(x), -1).mean(1) / 255  # noqa: E731 - a toy "model"
    table, scores = score_under_shifts(score, films, y, partial(binary_metrics, threshold=0.5))
    assert list(table["shift"]) == [s.name for s in SHIFTS] and set(scores) == set(table["shift"])
    assert table.loc[0, "roc_auc"] == 1.0
    summary = robustness_summary(table, "roc_auc")
    assert summary["clean"] == 1.0 and summary["worst"] <= summary["mean"] <= 1.0
    assert summary["worst_shift"] in set(table["shift"]) - {"none"}


def test_threshold_rules_are_judged_on_shifts_they_did_not_see():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    clean = np.r_[rng.uniform(0.0, 0.3, 200), rng.uniform(0.2, 1.0, 200)]
    # Shifted normals score higher, as the held-out films of another hospital would.
    scores = {"none": clean, **{f"s{i}": clean + (y == 0) * 0.1 * (i + 1) for i in range(3)}}
    table = compare_threshold_rules(y, scores).set_index(["rule", "shift"])
    assert set(table.index.get_level_values("rule")) == set(THRESHOLD_RULES_UNDER_SHIFT)
    assert table.loc[("half", "s0"), "threshold"] == 0.5
    assert table.loc[("youden", "s2"), "threshold"] == pytest.approx(choose_threshold(y, clean))
    # Leave one shift out: changing a shift's scores leaves the cut it is judged at unchanged.
    moved = compare_threshold_rules(y, {**scores, "s2": scores["s2"] + 0.05}).set_index(["rule", "shift"])
    for rule in ("pooled_youden", "worst_case"):
        assert moved.loc[(rule, "s2"), "threshold"] == table.loc[(rule, "s2"), "threshold"]
        assert moved.loc[(rule, "s1"), "threshold"] != table.loc[(rule, "s1"), "threshold"]
    # Normals drifting up: a cut that saw the drift keeps more specificity than Youden's.
    worst = table.xs("s2", level="shift")["specificity"]
    assert worst["worst_case"] > worst["youden"]


def test_threshold_under_shift_takes_the_rule_that_holds_and_reports_every_shift_at_its_cut(films):
    y = np.array([0, 0, 0, 1, 1, 1])
    films = films.copy()
    films[3:] = np.clip(films[3:].astype(int) + 40, 0, 255)
    score = lambda x: x.reshape(len(x), -1).mean(1) / 255  # noqa: E731
    threshold, rule, shifts, comparison = threshold_under_shift(score, films, y)
    assert rule == choose_threshold_rule(comparison) and rule in THRESHOLD_RULES_UNDER_SHIFT
    assert list(shifts["shift"]) == [s.name for s in SHIFTS]
    stored = binary_metrics(y, score(films), threshold=threshold)
    assert shifts.loc[0, "specificity"] == stored["specificity"] and shifts.loc[0, "roc_auc"] == 1.0
    assert threshold_under_shift(score, films, y, rule="half")[:2] == (0.5, "half")
    with pytest.raises(ValueError, match="rule must be 'shift' or one of"):
        threshold_under_shift(score, films, y, rule="median")


def test_multiclass_shift_metrics_reads_bacterial_against_viral_among_pneumonia_only():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[.8, .1, .1], [.2, .5, .3], [.1, .8, .1], [.2, .6, .2], [.1, .3, .6], [.3, .2, .5]])
    m = multiclass_shift_metrics(y, proba)
    assert m["bacterial_vs_viral_roc_auc"] == 1.0 and m["accuracy"] == pytest.approx(5 / 6)
