"""Tables of the report: Markdown pipe tables that Quarto renders in HTML and in Typst.

:func:`md_table` turns a DataFrame into ``IPython.display.Markdown``; the other functions
build the display frames (metrics with confidence intervals, the grid, the network) from
cache-entry tables.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pneumo.report.text import duration, missing, num

__all__ = ["COUNT_METRICS", "markdown", "md_table", "metric_label", "metric_value", "metrics_with_ci",
           "grid_table", "architecture_summary", "data_counts"]


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
    absent = [m for m in metrics if m not in indexed.index]
    if absent:
        raise KeyError(f"metrics {absent} are not in the table (it has {list(indexed.index)})")
    rows = []
    for m in metrics:
        row = indexed.loc[m]
        ci = ("undefined" if missing(row["ci_low"]) or missing(row["ci_high"])
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
    elif value is None or value is pd.NA or (isinstance(value, (float, np.floating))
                                             and not math.isfinite(float(value))):
        text = "–"
    elif isinstance(value, (int, np.integer)):
        text = format(int(value), intfmt)
    elif isinstance(value, (float, np.floating)):
        text = format(float(value), fmt) if fmt else str(value)
    else:
        # A zero-width space after "=" lets a long name such as "intensity=stretch" break
        # there: Typst cannot shrink a column below its longest unbreakable word.
        text = str(value).replace("=", "=\u200b")
    return " ".join(text.split())  # a row is one line of the source


def _width(text: str) -> int:
    """Columns ``text`` takes in the source as pandoc counts them (a zero-width space: none)."""
    return len(text) - text.count("\u200b")


def _place(text: str, width: int, side: str) -> str:
    """``text`` in a column of ``width`` characters, set to the ``side`` it is aligned to."""
    pad = width - _width(text)
    left = {"left": 0, "right": pad, "center": pad // 2}[side]
    return " " * left + text + " " * (pad - left)


def md_table(df: pd.DataFrame, floatfmt: str | Mapping[str, str] = ".3f", *, index: bool = False,
             intfmt: str = ",", align: Mapping[str, str] | None = None):
    """A Markdown table (``IPython.display.Markdown``) that Quarto renders in HTML and Typst.

    The table is a pandoc *simple table* (one line per row, columns set by the dashes under
    the header), which leaves the column widths to the output's own layout: the browser's,
    or Typst's ``auto`` columns, which fit the text width and wrap long cells instead of
    splitting words or overprinting a neighbour.

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
    Missing values are written as an en dash; line breaks in text become spaces.
    """
    frame = df.reset_index() if index else df
    columns = [" ".join(str(c).split()) for c in frame.columns]
    if not columns:
        raise ValueError("md_table needs at least one column")
    numeric = {str(c): pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns}
    align = dict(align or {})
    sides = [align.get(str(c), "right" if numeric[str(c)] else "left") for c in frame.columns]
    rows = [[_cell(v, floatfmt.get(str(c)) if isinstance(floatfmt, Mapping) else floatfmt, intfmt)
             for c, v in zip(frame.columns, values)] for values in frame.itertuples(index=False, name=None)]
    # The dashes overhang the header on the side away from the alignment (both sides when
    # centred): that is how a simple table says how a column is aligned.
    widths = [max([_width(h), *(_width(row[i]) for row in rows)]) + (2 if side == "center" else 1)
              for i, (h, side) in enumerate(zip(columns, sides))]

    def line(cells: list[str]) -> str:
        return "  ".join(_place(c, w, side) for c, w, side in zip(cells, widths, sides)).rstrip()

    lines = [line(columns), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    return markdown("\n".join(lines) + "\n")


def grid_table(grid: pd.DataFrame) -> pd.DataFrame:
    """The grid as a display table, in the grid's ranking (skipped variants last).

    Grids ranked under shift (:mod:`pneumo.shift`) also show the mean and worst validation
    ROC AUC over the shifted films.
    """
    rows = []
    under_shift = "val_shift_roc_auc_mean" in grid.columns
    for _, r in grid.iterrows():
        trained = str(r.get("status", "trained")) == "trained"
        shifted = {"Val ROC AUC under shift: mean": r.get("val_shift_roc_auc_mean") if trained else None,
                   "worst": r.get("val_shift_roc_auc_worst") if trained else None} if under_shift else {}
        rows.append({
            "Variant": str(r["variant"]),
            "Val ROC AUC": r.get("val_roc_auc") if trained else None,
            **shifted,
            "Val bal. acc.": r.get("val_balanced_accuracy") if trained else None,
            "Best / run epochs": (f"{int(r['best_epoch'])} / {int(r['epochs_run'])}" if trained else "skipped"),
            "Train time": duration(r.get("train_seconds")) if trained else "–",
            "Parameters": int(r["parameters"]) if trained else None,
        })
    return pd.DataFrame(rows)



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
