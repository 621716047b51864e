"""Helpers of the Quarto report, and ``python -m pneumo.report`` to build it.

The report (``report/index.qmd``) runs every task through :func:`pneumo.runner.run_task`
(cached), then formats numbers, tables and sentences with the functions here, so that the
``.qmd`` files hold prose and small expressions only and every number in the text is live.

Formatting helpers return plain strings for inline expressions (`` `{python} pct(x)` ``);
:func:`md_table` returns :class:`IPython.display.Markdown` holding a pipe table, which Quarto
renders in HTML and in Typst alike.

Run ``python -m pneumo.report [--profile smoke|cpu|gpu]`` to compute every task and render
the report with Quarto (or, without Quarto, to compute everything and print how to render).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from pneumo.results import PROJECT_ROOT, Entry

__all__ = [
    "TASKS",
    "compute_all",
    "num",
    "pct",
    "count",
    "duration",
    "plural",
    "signed",
    "fmt_ci",
    "metric_label",
    "metrics_with_ci",
    "metric_value",
    "md_table",
    "markdown",
    "auc_standard_error",
    "grid_table",
    "grid_story",
    "architecture_summary",
    "data_counts",
    "task_dataset",
    "images_for",
    "load_images",
    "sample_images",
    "misclassified",
    "final_variant",
    "BALANCE_TEXT",
    "curves_from_arrays",
    "platform_text",
    "main",
]

#: The report's tasks, in section order.
TASKS = ("binary", "multiclass", "embeddings", "anomaly", "explain")

#: Quarto's project output, as configured in ``_quarto.yml``.
OUTPUT_DIR = PROJECT_ROOT / "_output" / "report"

QUARTO_HELP = """\
Quarto was not found on PATH, so the report was not rendered (every result is computed and
cached, so rendering later is quick).

  1. Install Quarto >= 1.7 from https://quarto.org/docs/get-started/
     (conda users: `conda install -c conda-forge "quarto>=1.7"`).
     Typst, used for the PDF, ships with Quarto: no LaTeX is needed.
  2. From the project root, with this project's Python environment active
     (e.g. `. .venv/bin/activate`, so that Quarto's Jupyter kernel can import pneumo), run:
       {command}
  3. Open _output/report/index.html (self-contained) or _output/report/index.pdf.
"""


# -- computing -----------------------------------------------------------------------------------
def compute_all(profile: str | None = None, *, notebook: bool = True, **params: Any) -> dict[str, Entry]:
    """Run (or look up) every task of the report, in dependency order.

    Parameters
    ----------
    profile
        ``"smoke"``, ``"cpu"``, ``"gpu"`` or None (follows the hardware).
    notebook
        Run each task script through papermill (the default, keeps the executed notebook);
        False computes in this process.
    **params
        Config overrides applied to every task (e.g. ``device="cuda"``).

    Returns
    -------
    dict
        ``{task name: Entry}``.
    """
    from pneumo.runner import run_task

    return {name: run_task(name, profile, notebook=notebook, **params) for name in TASKS}


# -- numbers -------------------------------------------------------------------------------------
def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and not math.isfinite(float(x)))


def num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (``"undefined"`` for None/NaN, e.g. an AUC on one class)."""
    return "undefined" if _missing(x) else f"{float(x):.{digits}f}"


def pct(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.9321 -> "93.2%"``."""
    return "undefined" if _missing(x) else f"{100 * float(x):.{digits}f}%"


def count(n: Any) -> str:
    """An integer with thousands separators: ``5856 -> "5,856"``."""
    if _missing(n):
        return "undefined"
    if float(n) != int(float(n)):
        raise ValueError(f"count() expects a whole number, got {n!r}")
    return f"{int(float(n)):,}"


def signed(x: Any, digits: int = 3) -> str:
    """A difference with its sign: ``+0.012`` / ``-0.004`` (a true minus sign)."""
    if _missing(x):
        return "undefined"
    text = f"{float(x):+.{digits}f}"
    return text.replace("-", "\u2212")


def plural(n: Any, word: str, words: str | None = None) -> str:
    """``"1 image"``, ``"3 images"``: a count with its noun (``words``: an irregular plural)."""
    n = int(n)
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def join_words(items: Iterable[str], last: str = "and") -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``: a list in a sentence (``last``: the final joiner)."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def duration(seconds: Any) -> str:
    """A duration in the unit that reads best: ``"42 s"``, ``"3.5 min"``, ``"1.2 h"``."""
    if _missing(seconds):
        return "undefined"
    s = float(seconds)
    if s < 90:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 90 * 60:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_ci(row: Mapping[str, Any] | pd.Series, digits: int = 3, *, percent: bool = False) -> str:
    """``"0.981 [0.970, 0.990]"`` from a row with ``value``, ``ci_low`` and ``ci_high``."""
    f = (lambda v: pct(v, max(digits - 2, 0))) if percent else (lambda v: num(v, digits))
    value = f(row["value"])
    if _missing(row.get("ci_low")) or _missing(row.get("ci_high")):
        return f"{value} [CI undefined]"
    return f"{value} [{f(row['ci_low'])}, {f(row['ci_high'])}]"


# -- metric tables -------------------------------------------------------------------------------
_METRIC_LABELS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "average_precision": "PR AUC (average precision)",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "precision": "Precision (PPV)",
    "f1": "F1",
    "precision_macro": "Precision, macro mean",
    "sensitivity_macro": "Sensitivity, macro mean",
    "f1_macro": "F1, macro mean",
    "tn": "True negatives",
    "fp": "False positives",
    "fn": "False negatives",
    "tp": "True positives",
}

#: Confusion counts: shown in the confusion matrix, not in metric tables.
COUNT_METRICS = ("tn", "fp", "fn", "tp")


def metric_label(name: str, classes: Sequence[str] | None = None) -> str:
    """A readable metric name: ``"roc_auc" -> "ROC AUC"``, ``"sensitivity_2" -> "Sensitivity (viral)"``.

    Per-class keys (``<metric>_<class index or name>``) are named after the class; indices
    are looked up in ``classes``.
    """
    if name in _METRIC_LABELS:
        return _METRIC_LABELS[name]
    match = re.fullmatch(r"(sensitivity|precision|specificity|f1|roc_auc|pr_auc)_(\w+)", name)
    if match:
        base, cls = match.groups()
        if cls.isdigit() and classes is not None:
            cls = classes[int(cls)]
        base_label = {"sensitivity": "Sensitivity", "precision": "Precision", "specificity": "Specificity",
                      "f1": "F1", "roc_auc": "ROC AUC", "pr_auc": "PR AUC"}[base]
        return f"{base_label} ({cls})"
    return name.replace("_", " ").capitalize()


def _metric_index(table: pd.DataFrame) -> pd.DataFrame:
    if "metric" not in table.columns:
        raise KeyError(
            f"a metrics table needs a 'metric' column (columns: {list(table.columns)}); "
            "was it written without its index?"
        )
    return table.set_index("metric")


def metric_value(table: pd.DataFrame, metric: str, column: str = "value") -> float:
    """One number of a ``metric, value, ci_low, ci_high`` table."""
    return float(_metric_index(table).loc[metric, column])


def metrics_with_ci(table: pd.DataFrame, metrics: Sequence[str] | None = None, *, digits: int = 3,
                    classes: Sequence[str] | None = None) -> pd.DataFrame:
    """A display table ``Metric | Estimate | 95% CI`` from ``metric, value, ci_low, ci_high``.

    Parameters
    ----------
    table
        As written by :func:`pneumo.metrics.metrics_table` (one row per metric).
    metrics
        Metrics to show, in this order (a missing one raises ``KeyError``); default every
        metric but the confusion counts.
    classes
        Class names for per-class keys such as ``sensitivity_1``.
    """
    indexed = _metric_index(table)
    if metrics is None:
        metrics = [m for m in indexed.index if m not in COUNT_METRICS]
    missing = [m for m in metrics if m not in indexed.index]
    if missing:
        raise KeyError(f"metrics {missing} are not in the table (it has {list(indexed.index)})")
    rows = []
    for m in metrics:
        row = indexed.loc[m]
        ci = ("undefined" if _missing(row["ci_low"]) or _missing(row["ci_high"])
              else f"[{num(row['ci_low'], digits)}, {num(row['ci_high'], digits)}]")
        rows.append({"Metric": metric_label(m, classes), "Estimate": num(row["value"], digits), "95% CI": ci})
    return pd.DataFrame(rows, columns=["Metric", "Estimate", "95% CI"])


# -- markdown --------------------------------------------------------------------------------------
def markdown(text: str):
    """``IPython.display.Markdown`` (imported lazily so the module works without IPython)."""
    from IPython.display import Markdown

    return Markdown(text)


def _cell(value: Any, fmt: str | None, intfmt: str) -> str:
    if isinstance(value, (bool, np.bool_)):
        text = "yes" if value else "no"
    elif value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(float(value))):
        text = "–"
    elif isinstance(value, (int, np.integer)):
        text = format(int(value), intfmt)
    elif isinstance(value, (float, np.floating)):
        text = format(float(value), fmt) if fmt else str(value)
    else:
        text = str(value)
    # A pipe would end the cell and a newline the row.
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(df: pd.DataFrame, floatfmt: str | Mapping[str, str] = ".3f", *, index: bool = False,
             intfmt: str = ",", align: Mapping[str, str] | None = None):
    """A pipe table (``IPython.display.Markdown``) that Quarto renders in HTML and Typst.

    Parameters
    ----------
    df
        The table; column names become the header.
    floatfmt
        Format spec for float cells, one for all columns or ``{column: spec}`` (others
        unformatted).
    index
        Include the index as the first column.
    intfmt
        Format spec for integer cells (default: thousands separators).
    align
        ``{column: "left" | "right" | "center"}``; default right for numeric columns.

    Notes
    -----
    Missing values are written as an en dash; ``|`` in text is escaped.
    """
    frame = df.reset_index() if index else df
    columns = [str(c) for c in frame.columns]
    if not columns:
        raise ValueError("md_table needs at least one column")
    numeric = {str(c): pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns}
    align = dict(align or {})
    marks = {"left": ":---", "right": "---:", "center": ":---:"}
    header = "| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |"
    rule = "|" + "|".join(marks[align.get(c, "right" if numeric[c] else "left")] for c in columns) + "|"
    lines = [header, rule]
    for values in frame.itertuples(index=False, name=None):
        cells = []
        for c, v in zip(columns, values):
            fmt = floatfmt.get(c) if isinstance(floatfmt, Mapping) else floatfmt
            cells.append(_cell(v, fmt, intfmt))
        lines.append("| " + " | ".join(cells) + " |")
    return markdown("\n".join(lines) + "\n")


# -- model selection -------------------------------------------------------------------------------
def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil's (1982) standard error of an AUC estimated on ``n_pos`` + ``n_neg`` cases.

    A rough guide to how much a validation AUC would move on another sample of the same
    size (it ignores patient clustering, so it is if anything optimistic).
    """
    a = float(auc)
    if not 0 < a < 1 or n_pos < 1 or n_neg < 1:
        return 0.0 if a in (0.0, 1.0) else math.nan
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def grid_table(grid: pd.DataFrame) -> pd.DataFrame:
    """The grid as a display table, best validation ROC AUC first (skipped variants last)."""
    rows = []
    for _, r in grid.iterrows():
        trained = str(r.get("status", "trained")) == "trained"
        rows.append({
            "Variant": str(r["variant"]),
            "Val ROC AUC": r.get("val_roc_auc") if trained else None,
            "Val bal. acc.": r.get("val_balanced_accuracy") if trained else None,
            "Val acc.": r.get("val_accuracy") if trained else None,
            "Best / run epochs": (f"{int(r['best_epoch'])} / {int(r['epochs_run'])}" if trained else "skipped"),
            "Train time": duration(r.get("train_seconds")) if trained else "–",
            "Parameters": f"{int(r['parameters']):,}" if trained else "–",
        })
    return pd.DataFrame(rows)


def _axis_phrase(value: float, base: float, se: float) -> str:
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


def grid_story(grid: pd.DataFrame, chosen: str, *, se: float, baseline: str = "baseline",
               metric_name: str = "validation ROC AUC") -> dict[str, str]:
    """Sentences that explain the grid's outcome from its numbers (Markdown).

    Parameters
    ----------
    grid
        The task's ``grid`` table (ranked, ``status`` ``trained`` or ``skipped: ...``).
    chosen
        ``metrics["chosen_variant"]``.
    se
        Rough standard error of a validation AUC (:func:`auc_standard_error`), used to say
        which differences are larger than the noise of the validation split; NaN or 0 (an
        AUC at its ceiling) means no such yardstick.
    baseline
        Name of the baseline row.
    metric_name
        How to call the selection metric in the text.

    Returns
    -------
    dict
        ``winner``: why the chosen variant won; ``effects``: a Markdown bullet list, one line
        per variant, its difference from the baseline; ``skipped``: a sentence on skipped
        variants ('' if none).
    """
    trained = grid[grid["status"] == "trained"].sort_values(
        ["val_roc_auc", "val_balanced_accuracy"], ascending=False, kind="stable").reset_index(drop=True)
    if chosen not in set(trained["variant"]):
        raise KeyError(f"chosen variant {chosen!r} is not a trained row of the grid")
    usable_se = math.isfinite(se) and se > 0
    by_name = trained.set_index("variant")
    best = by_name.loc[chosen]
    if len(trained) == 1:
        winner = (f"Only one variant was trained, so **{chosen}** was used "
                  f"({metric_name} {num(best['val_roc_auc'])}).")
    else:
        runner = trained[trained["variant"] != chosen].iloc[0]
        margin = float(best["val_roc_auc"] - runner["val_roc_auc"])
        bal_margin = float(best["val_balanced_accuracy"] - runner["val_balanced_accuracy"])
        noise = ""
        if margin > 1e-12:
            # Enough decimals to show the two values apart.
            d = next((k for k in (3, 4, 5, 6) if num(best["val_roc_auc"], k) != num(runner["val_roc_auc"], k)), 6)
            reason = (f"it reached the highest {metric_name}, {num(best['val_roc_auc'], d)}, ahead of "
                      f"**{runner['variant']}** ({num(runner['val_roc_auc'], d)}) by {num(margin, d)}")
            if usable_se and margin < se:
                noise = (f"That margin is smaller than the rough standard error of a validation AUC "
                         f"on this split (about {num(se)}), so the top of the ranking is close to a "
                         "tie: another validation split could order these variants differently.")
            elif usable_se:
                noise = (f"The margin exceeds the rough standard error of a validation AUC on this "
                         f"split (about {num(se)}).")
        elif bal_margin > 1e-12:
            reason = (f"it tied with **{runner['variant']}** on {metric_name} "
                      f"({num(best['val_roc_auc'])}) and won on validation balanced accuracy "
                      f"({num(best['val_balanced_accuracy'])} against {num(runner['val_balanced_accuracy'])})")
        else:
            reason = (f"it tied with **{runner['variant']}** on both {metric_name} "
                      f"({num(best['val_roc_auc'])}) and balanced accuracy "
                      f"({num(best['val_balanced_accuracy'])}), and a full tie keeps the grid's "
                      "order, which lists the baseline first")
        if float(best["val_roc_auc"]) >= 1 - 1e-12 and margin <= 1e-12:
            noise = ("With validation AUCs at their ceiling of 1, the validation split is too easy "
                     "to rank these variants.")
        kept = ("The configured baseline kept its place" if chosen == baseline
                else f"The change **{chosen}** was adopted over the baseline")
        winner = f"{kept}: {reason}. {noise}".strip()

    effects = []
    if baseline in by_name.index:
        base_auc = float(by_name.loc[baseline, "val_roc_auc"])
        for name, row in by_name.iterrows():
            if name != baseline:
                effects.append(f"- **{name}**: {_axis_phrase(float(row['val_roc_auc']), base_auc, se)}")
    skipped_rows = grid[grid["status"] != "trained"]
    skipped = ""
    if len(skipped_rows):
        items = "; ".join(f"**{r['variant']}** ({_short_reason(r['status'])})"
                          for _, r in skipped_rows.iterrows())
        skipped = f"Skipped, so not compared: {items}."
    return {"winner": winner, "effects": "\n".join(effects), "skipped": skipped}


# -- architecture ----------------------------------------------------------------------------------
def _shape_text(shape: Any) -> str:
    if shape is None or (isinstance(shape, float) and math.isnan(shape)):
        return "–"
    numbers = re.findall(r"\d+", str(shape))
    return " × ".join(numbers) if numbers else str(shape)


def _compress(types: list[str]) -> str:
    """``[A, B, A, B, C] -> "2 × (A → B) → C"``: the longest leading repetition, then the rest."""
    best = (1, 0)  # (repeats, period)
    for period in range(1, len(types) // 2 + 1):
        unit = types[:period]
        reps = 1
        while types[reps * period:(reps + 1) * period] == unit:
            reps += 1
        if reps > 1 and reps * period > best[0] * best[1]:
            best = (reps, period)
    reps, period = best
    if reps > 1:
        head = f"{reps} × ({' → '.join(types[:period])})"
        rest = types[reps * period:]
        return " → ".join([head, *rest])
    return " → ".join(types)


def architecture_summary(arch: pd.DataFrame) -> pd.DataFrame:
    """The layer table condensed to one row per block: layers, output shape, parameters.

    Parameters
    ----------
    arch
        :func:`pneumo.models.architecture_table` output (``layer``, ``type``,
        ``output_shape``, ``parameters``; a last ``total`` row).

    Returns
    -------
    pandas.DataFrame
        ``Stage | Layers | Output (C × H × W) | Parameters``, plus the total.
    """
    body = arch[~arch["layer"].isin(["total", "(unused)"])]

    def stage(name: str) -> str:
        # blocks.block1.conv1 -> block1; model.features.denseblock1.x -> denseblock1;
        # head.fc -> head; gap -> gap
        parts = name.split(".")
        while len(parts) > 1 and parts[0] in ("blocks", "features", "model"):
            parts = parts[1:]
        return parts[0]

    rows: list[dict[str, Any]] = []
    for name, part in body.groupby(body["layer"].map(stage), sort=False):
        rows.append({
            "Stage": name,
            "Layers": _compress(part["type"].astype(str).tolist()),
            "Output": _shape_text(part["output_shape"].iloc[-1]),
            "Parameters": int(part["parameters"].sum()),
        })
    total = int(arch.loc[arch["layer"] == "total", "parameters"].iloc[0]) if (arch["layer"] == "total").any() \
        else int(body["parameters"].sum())
    rows.append({"Stage": "**total**", "Layers": "", "Output": "", "Parameters": total})
    return pd.DataFrame(rows)


# -- data ------------------------------------------------------------------------------------------
def data_counts(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Images per split and class from an entry's ``data_summary.json``.

    Returns
    -------
    pandas.DataFrame
        Index ``train``, ``val``, ``test``; columns ``normal``, ``bacterial``, ``viral``,
        ``total``, ``patients``.
    """
    from pneumo.data import CLASSES

    frame = pd.DataFrame(summary["counts"]).T
    frame = frame.reindex(index=[s for s in ("train", "val", "test") if s in frame.index],
                          columns=[*CLASSES, "total", "patients"])
    frame.index.name = "split"
    return frame.astype("int64")


def task_dataset(entry: Entry):
    """The decoded data set a Task 1 entry was computed on, at its final model's resolution.

    Uses the entry's own data and split settings, so the images line up with its
    ``predictions`` table by ``relpath``; the decode cache makes this a quick load. See
    :func:`pneumo.upstream.entry_dataset` (which also checks the data fingerprint).
    """
    from pneumo.upstream import entry_dataset

    return entry_dataset(entry)


def images_for(dataset, relpaths: Iterable[str]) -> list[np.ndarray]:
    """The decoded images (H, W) of ``relpaths`` from a loaded data set (KeyError if absent)."""
    position = {r: i for i, r in enumerate(dataset.table["relpath"])}
    out = []
    for r in relpaths:
        if r not in position:
            raise KeyError(f"{r!r} is not in the data set at {dataset.root}")
        out.append(dataset.images[position[r]])
    return out


def load_images(relpaths: Iterable[str], root: str | os.PathLike, *, resolution: int = 224) -> list[np.ndarray]:
    """Read image files and decode them as the pipeline does (grey, centre square, resized).

    For figures that want more pixels than the training resolution; raises on a file that
    cannot be read.
    """
    from pneumo.data.decode import decode_bytes

    return [decode_bytes(Path(root, r).read_bytes(), resolution)[0] for r in relpaths]


def sample_images(dataset, *, per_class: int = 5, split: str = "train", seed: int = 0,
                  resolution: int | None = 224) -> dict[str, list[np.ndarray]]:
    """A few random images per class (one per patient), for the data overview figure.

    ``resolution`` re-reads the files at that size (None: the data set's own arrays).
    """
    from pneumo.data import CLASSES

    rng = np.random.default_rng(seed)
    rows = dataset.table[dataset.table["split"] == split]
    out: dict[str, list[np.ndarray]] = {}
    for label in CLASSES:
        part = rows[rows["label"] == label].drop_duplicates("patient")
        take = part.iloc[np.sort(rng.choice(len(part), size=min(per_class, len(part)), replace=False))]
        relpaths = take["relpath"].tolist()
        out[label] = (images_for(dataset, relpaths) if resolution is None
                      else load_images(relpaths, dataset.root, resolution=resolution))
    return out


def misclassified(predictions: pd.DataFrame, classes: Sequence[str], *, split: str = "test",
                  limit: int = 12, threshold: float | None = None) -> pd.DataFrame:
    """Wrongly classified images of a split, the most confident mistakes first.

    Parameters
    ----------
    predictions
        The task's ``predictions`` table (``split``, ``relpath``, ``target``, ``predicted``,
        ``p_<class>``).
    classes
        Class names in target order.
    threshold
        Binary tasks: the decision threshold on ``p_<classes[1]>``. The shown probability is
        then that of the positive class and mistakes are ranked by their distance from the
        threshold; otherwise the probability of the predicted class ranks them.

    Returns
    -------
    pandas.DataFrame
        The wrong rows with ``true`` and ``pred`` (class names) and ``shown`` (the probability
        to print), at most ``limit`` rows.
    """
    rows = predictions[predictions["split"] == split].copy()
    rows["true"] = [classes[int(t)] for t in rows["target"]]
    rows["pred"] = [classes[int(p)] for p in rows["predicted"]]
    if threshold is not None:
        if len(classes) != 2:
            raise ValueError("a threshold only applies to a binary task")
        rows["shown"] = rows[f"p_{classes[1]}"]
        rank = (rows["shown"] - threshold).abs()
    else:
        proba = rows[[f"p_{c}" for c in classes]].to_numpy()
        rows["shown"] = proba[np.arange(len(rows)), rows["predicted"].astype(int).to_numpy()]
        rank = rows["shown"]
    wrong = rows.assign(_rank=rank)[rows["target"] != rows["predicted"]]
    return wrong.sort_values("_rank", ascending=False).drop(columns="_rank").head(limit)


def final_variant(entry: Entry) -> Entry:
    """The grid-variant entry that trained a task's final model (its ``run.json`` says where).

    Falls back to the task entry itself when the variant folder is not in this cache (an
    entry copied without its variants).
    """
    key = entry.metrics.get("variant_entry")
    variant = Entry(entry.path.parent.parent / f"{entry.path.parent.name}-variant" / str(key))
    return variant if key and variant.exists else entry


#: How each ``balance`` setting handles the class imbalance (for the design prose).
BALANCE_TEXT = {
    "weights": ("class-weighted cross-entropy, each class weighted by the inverse of its "
                "training frequency (normalised so that the mean weight per image is 1)"),
    "sampling": ("plain cross-entropy on class-balanced batches: every epoch draws as many "
                 "images as the training set holds, with replacement, each class equally likely"),
    "none": "plain cross-entropy, with no correction for the class imbalance",
}


def curves_from_arrays(arrays: Mapping[str, np.ndarray], prefixes: Mapping[str, str],
                       aucs: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """``{label: {"fpr", "tpr", "precision", "recall", ["auc"]}}`` from ``arrays.npz`` keys.

    Parameters
    ----------
    arrays
        ``entry.arrays()``.
    prefixes
        ``{curve label: array prefix}``, e.g. ``{"pneumonia": "test"}`` reads ``test_fpr`` ...
    aucs
        Optional headline AUC per label for the legend (else computed from the points).
    """
    out: dict[str, dict[str, Any]] = {}
    for label, prefix in prefixes.items():
        keys = [f"{prefix}_{k}" for k in ("fpr", "tpr", "precision", "recall")]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise KeyError(f"arrays lack {missing} (have {sorted(arrays)})")
        out[label] = {k: arrays[f"{prefix}_{k}"] for k in ("fpr", "tpr", "precision", "recall")}
        if aucs and label in aucs:
            out[label]["auc"] = aucs[label]
    return out


def platform_text(entry: Entry) -> str:
    """Where an entry was computed: ``"one NVIDIA H100 GPU with PyTorch 2.x and Python 3.x (Linux)"``."""
    run = entry.run
    device = f"one {run['cuda']} GPU" if run.get("cuda") else f"the CPU ({run.get('cpu_threads', '?')} threads)"
    system = str(run.get("platform", "?")).split("-")[0]
    return f"{device} with PyTorch {run.get('torch', '?')} and Python {run.get('python', '?')} ({system})"


# -- command line ----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pneumo.report``: compute every task, then render with Quarto if installed."""
    parser = argparse.ArgumentParser(
        prog="python -m pneumo.report",
        description="Compute every task of the report (cached) and render it with Quarto.")
    parser.add_argument("--profile", choices=("smoke", "cpu", "gpu"), default=None,
                        help="compute profile (default: follows the hardware: gpu with CUDA, else cpu)")
    parser.add_argument("--no-render", action="store_true", help="compute only, do not run Quarto")
    args = parser.parse_args(argv)

    from pneumo.runner import setup_logging

    setup_logging()
    entries = compute_all(args.profile)
    for name, entry in entries.items():
        print(f"{name}: {entry.path}")

    env = dict(os.environ)
    # Quarto must run the report's kernel with this interpreter (the one that has pneumo),
    # also when it was started as .venv/bin/python without activating the environment.
    env.setdefault("QUARTO_PYTHON", sys.executable)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if args.profile:
        env["PNEUMO_PROFILE"] = args.profile  # the report's setup cell reads it
    command = ("PNEUMO_PROFILE=" + args.profile + " " if args.profile else "") + "quarto render"
    if args.no_render:
        print(f"computed; render with: {command}")
        return 0
    quarto = shutil.which("quarto")
    if quarto is None:
        print(QUARTO_HELP.format(command=command))
        return 0
    result = subprocess.run([quarto, "render"], cwd=PROJECT_ROOT, env=env, check=False)
    if result.returncode == 0:
        for name in ("index.html", "index.pdf"):
            print(f"wrote {OUTPUT_DIR / name}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
