"""The Task 1 grid: the alternatives tried on validation, which one won and why.

The grid's story (the winner, each variant's effect on the baseline, the skipped variants),
the noise yardstick it is judged by (a rough standard error of a validation AUC), the
variants' definitions, and whether the final model is the winner's grid run or a retraining.
Task 1a and 1b read their grids with the same functions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pneumo.metrics import auc_standard_error
from pneumo.report.entries import ReportEntry
from pneumo.report.tables import grid_table, markdown
from pneumo.report.text import num, plural, signed

__all__ = ["grid_story", "retrain_sentence", "init_sentence", "selection_sentence"]


def _axis_phrase(value: float, base: float, se: float) -> str:
    """A variant's validation AUC against the baseline's, and whether the difference exceeds ``se``."""
    delta = value - base
    head = f"{num(value)} against the baseline's {num(base)} ({signed(delta)})"
    if not math.isfinite(se) or se <= 0:
        return head + "."
    if abs(delta) <= se:
        return head + ", within one standard error: no clear effect."
    return head + f", more than one standard error {'higher' if delta > 0 else 'lower'}."


def _short_reason(status: Any) -> str:
    """``"skipped: weights 'x' not found: missing file ..."`` -> ``"weights 'x' not found"``."""
    reason = str(status).removeprefix("skipped:").strip()
    return reason.split(": ")[0].split(". ")[0].strip() or "no reason given"


#: How the story names a ranking column of the grid table.
_COLUMN_NAMES = {"val_roc_auc": "validation ROC AUC", "val_balanced_accuracy": "validation balanced accuracy",
                 "val_shift_roc_auc_mean": "mean validation ROC AUC under shift"}


def _winner_sentence(trained: pd.DataFrame, chosen: str, *, se: float, baseline: str, metric_name: str,
                     ranking: Sequence[str]) -> str:
    """Why ``chosen`` won the ranked ``trained`` rows, and whether its margin exceeds the noise.

    ``ranking``: the grid's ranking columns, most important first (the first is ``metric_name``).
    """
    usable_se = math.isfinite(se) and se > 0
    column, tiebreak = ranking[0], ranking[1]
    best = trained.set_index("variant").loc[chosen]
    if len(trained) == 1:
        return (f"Only one variant was trained, so **{chosen}** was used "
                f"({metric_name} {num(best[column])}).")
    runner = trained[trained["variant"] != chosen].iloc[0]
    margin = float(best[column] - runner[column])
    tie_margin = float(best[tiebreak] - runner[tiebreak])
    tie_name = _COLUMN_NAMES.get(tiebreak, tiebreak)
    noise = ""
    if margin > 1e-12:
        # Enough decimals to show the two values apart.
        d = next((k for k in (3, 4, 5, 6) if num(best[column], k) != num(runner[column], k)), 6)
        reason = (f"it reached the highest {metric_name}, {num(best[column], d)}, ahead of "
                  f"**{runner['variant']}** ({num(runner[column], d)}) by {num(margin, d)}")
        if usable_se and margin < se:
            noise = (f"That margin is smaller than the rough standard error of a validation AUC "
                     f"on this split (about {num(se)}), so the top of the ranking is close to a "
                     "tie: another validation split could order these variants differently.")
        elif usable_se:
            noise = (f"The margin exceeds the rough standard error of a validation AUC on this "
                     f"split (about {num(se)}).")
    elif tie_margin > 1e-12:
        reason = (f"it tied with **{runner['variant']}** on {metric_name} "
                  f"({num(best[column])}) and won on {tie_name} "
                  f"({num(best[tiebreak])} against {num(runner[tiebreak])})")
    else:
        reason = (f"it tied with **{runner['variant']}** on both {metric_name} "
                  f"({num(best[column])}) and {tie_name} "
                  f"({num(best[tiebreak])}), and a full tie keeps the grid's "
                  "order, which lists the baseline first")
    if float(best[column]) >= 1 - 1e-12 and margin <= 1e-12:
        noise = ("With validation AUCs at their ceiling of 1, the validation split is too easy "
                 "to rank these variants.")
    kept = ("The configured baseline kept its place" if chosen == baseline
            else f"The change **{chosen}** was adopted over the baseline")
    return f"{kept}: {reason}. {noise}".strip()


def _effect_lines(trained: pd.DataFrame, baseline: str, se: float, column: str) -> str:
    """A Markdown bullet list: each trained variant's ``column`` (a validation AUC) against the baseline's."""
    by_name = trained.set_index("variant")
    if baseline not in by_name.index:
        return ""
    base_auc = float(by_name.loc[baseline, column])
    return "\n".join(f"- **{name}**: {_axis_phrase(float(row[column]), base_auc, se)}"
                     for name, row in by_name.iterrows() if name != baseline)


def _skipped_sentence(grid: pd.DataFrame) -> str:
    """The variants the grid skipped, each with its short reason ('' if none)."""
    skipped_rows = grid[grid["status"] != "trained"]
    if not len(skipped_rows):
        return ""
    items = "; ".join(f"**{r['variant']}** ({_short_reason(r['status'])})" for _, r in skipped_rows.iterrows())
    return f"Skipped, so not compared: {items}."


def grid_story(grid: pd.DataFrame, chosen: str, *, se: float, baseline: str = "baseline",
               metric_name: str = "validation ROC AUC", selection: str = "plain") -> dict[str, str]:
    """Sentences that explain the grid's outcome from its numbers (Markdown).

    Parameters
    ----------
    grid
        The task's ``grid`` table (ranked, ``status`` ``trained`` or ``skipped: ...``).
    chosen
        ``metrics["chosen_variant"]``.
    se
        Rough standard error of a validation AUC (:func:`pneumo.metrics.auc_standard_error`),
        used to say which differences are larger than the noise of the validation split; NaN
        or 0 (an AUC at its ceiling) means no such yardstick.
    baseline
        Name of the baseline row.
    metric_name
        How to call the selection metric in the text.
    selection
        The task's ``selection`` (:data:`pneumo.shift.SELECTION_CRITERIA`): which column ranked
        the grid (:func:`pneumo.classification.grid_ranking`).

    Returns
    -------
    dict
        ``winner``: why the chosen variant won; ``effects``: a Markdown bullet list, one line
        per variant, its difference from the baseline; ``skipped``: a sentence on skipped
        variants ('' if none).
    """
    from pneumo.classification import grid_ranking

    ranking = grid_ranking(selection)
    trained = grid[grid["status"] == "trained"].sort_values(
        ranking, ascending=False, kind="stable").reset_index(drop=True)
    if chosen not in set(trained["variant"]):
        raise KeyError(f"chosen variant {chosen!r} is not a trained row of the grid")
    return {"winner": _winner_sentence(trained, chosen, se=se, baseline=baseline, metric_name=metric_name,
                                       ranking=ranking),
            "effects": _effect_lines(trained, baseline, se, ranking[0]), "skipped": _skipped_sentence(grid)}


def _grid_changes(entry: ReportEntry, task: str) -> dict[str, dict[str, Any]]:
    """``{variant name: field changes}`` of the entry's grid, from the task's own grid definition.

    Rebuilds the task config from the entry's parameters and asks
    :func:`pneumo.classification.grid_variants`, so the section never spells out variant names.
    """
    from pneumo.classification import BinaryConfig, MulticlassConfig, grid_variants

    cls = BinaryConfig if task == "binary" else MulticlassConfig
    params = entry.params
    config = cls(**{k: params[k] for k in cls.field_names() if k in params})
    return dict(grid_variants(config))


def _variant_named(changes: Mapping[str, Mapping[str, Any]], wanted: Mapping[str, Any]) -> str | None:
    """The grid variant whose changes are exactly ``wanted`` (``{}``: the baseline), or None."""
    return next((name for name, c in changes.items() if dict(c) == dict(wanted)), None)


def _validation_auc_se(best_auc: float, targets: Sequence[int], classes: Sequence[int]) -> float:
    """Rough standard error of the best validation AUC: Hanley & McNeil's per one-vs-rest question.

    ``classes`` are the positive classes of the questions (1a: pneumonia only); several are
    averaged, which for a macro AUC is an upper bound on the standard error of their mean.
    """
    targets = np.asarray(targets)
    return float(np.mean([auc_standard_error(best_auc, int((targets == c).sum()), int((targets != c).sum()))
                          for c in classes]))


def _final_is_grid_run(trained: pd.DataFrame, chosen: str, metrics: Mapping[str, Any],
                       history: pd.DataFrame) -> bool:
    """True when the final model is the winner's grid run itself, not a retraining.

    The grid screens at a smaller budget than the final training only sometimes; when it does
    not, the final training finds the winner's run in the cache and reuses it, so its record
    (epochs run, best epoch, training time) is the grid row's. A retraining is a new run,
    whose measured training time differs.
    """
    row = trained.set_index("variant").loc[chosen]
    return (int(row["epochs_run"]) == len(history) and int(row["best_epoch"]) == int(metrics["best_epoch"])
            and math.isclose(float(row["train_seconds"]), float(metrics["train_seconds"]), rel_tol=1e-9))


def retrain_sentence(retrained: bool, screened: int, final_epochs: int, again: str = "again") -> str:
    """How the final model relates to the grid: retrained at the full budget, or the winner's run.

    ``screened`` is the most epochs any grid variant ran; ``again`` words the retraining
    (1a: ``"again from the start"``).
    """
    if not retrained:
        return (f"Every variant was trained with the full budget of {plural(final_epochs, 'epoch')}, so the winner's "
                "grid run is the final model.")
    return (f"Every variant was screened for at most {plural(screened, 'epoch')}; the winner was then trained "
            f"{again} for up to {plural(final_epochs, 'epoch')}, and that model is the one evaluated below.")


def init_sentence(warm: float | None, scratch: float | None, se: float) -> str:
    """The effect of starting from Task 1a (``warm``) against scratch on validation ('' if not measured)."""
    if warm is None or scratch is None:
        return ""
    delta = warm - scratch
    verdict = ("a difference within the rough standard error, so on this evidence the head start "
               "neither clearly helps nor hurts." if abs(delta) <= se else
               "the head start helps." if delta > 0 else
               "the head start hurts here, perhaps because features tuned to the binary question "
               "must first be unlearned.")
    return (f"Starting from the Task 1a network changed the validation macro ROC AUC by "
            f"{signed(delta)} compared with training the same network from scratch for the "
            f"same number of epochs ({num(warm)} against {num(scratch)}); " + verdict)


def selection_sentence(selection: str, metric_name: str) -> str:
    """How the grid's variants were ranked (``metric_name``: the criterion as the story calls it)."""
    from pneumo.shift import SHIFTS

    if selection == "shift":
        return (f"Variants are ranked by their {metric_name}: the mean over {len(SHIFTS) - 1} shifted "
                "copies of the validation films (exposure, sharpness, framing, a black border; "
                "@sec-generalisation), because on the films as they are nearly every variant sits near "
                "the ceiling; ties go to the plain validation figure.")
    return f"Variants are ranked by their {metric_name}; ties go to validation balanced accuracy."


def _shared_selection(r: Mapping[str, Any], *, se: float, baseline: str, metric_name: str,
                      again: str) -> dict[str, Any]:
    """The grid's table and story, the retraining sentence and the final training run."""
    metrics, trained, history, config = r["metrics"], r["trained"], r["history"], r["config"]
    chosen = str(metrics["chosen_variant"])
    selection = str(r["params"].get("selection", "plain"))  # entries from before the shift criterion: plain
    if selection == "shift":
        metric_name = f"mean {metric_name} under shift"
    story = grid_story(r["grid"], chosen, se=se, baseline=baseline, metric_name=metric_name,
                       selection=selection)
    effects = story["effects"] or "*The grid has no baseline row to compare with.*"
    retrained = not _final_is_grid_run(trained, chosen, metrics, history)
    return {
        "chosen": chosen,
        "selection_text": markdown(selection_sentence(selection, metric_name)),  # its cross-reference resolves
        "se": se,
        "grid_table": grid_table(r["grid"]),
        "grid_winner": markdown(story["winner"]),
        "grid_effects": "\n\n".join(part for part in (effects, story["skipped"]) if part),
        "retrained": retrained,
        "retrain_text": retrain_sentence(retrained, int(trained["epochs_run"].max()), int(config["epochs"]), again),
        "history": history,
        "epochs_run": int(len(history)),
        "best_epoch": int(metrics["best_epoch"]),
        "stopped": len(history) < int(config["epochs"]),
    }
