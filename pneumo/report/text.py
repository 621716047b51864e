"""Numbers and words for the report's prose: every inline value goes through one of these.

Each helper returns a plain string (``"93.2%"``, ``"0.981 [0.970, 0.990]"``); a missing
value (None, NaN) reads ``"undefined"`` rather than ``"nan"``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["missing", "num", "pct", "count", "signed", "plural", "join_words", "duration", "fmt_ci", "capitalise"]


def missing(x: Any) -> bool:
    """True for None and for a non-finite float: values the report shows as "undefined"."""
    return x is None or (isinstance(x, (float, np.floating)) and not math.isfinite(float(x)))


def num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (``"undefined"`` for None/NaN, e.g. an AUC on one class)."""
    return "undefined" if missing(x) else f"{float(x):.{digits}f}"


def pct(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.9321 -> "93.2%"``."""
    return "undefined" if missing(x) else f"{100 * float(x):.{digits}f}%"


def count(n: Any) -> str:
    """An integer with thousands separators: ``5856 -> "5,856"``."""
    if missing(n):
        return "undefined"
    if float(n) != int(float(n)):
        raise ValueError(f"count() expects a whole number, got {n!r}")
    return f"{int(float(n)):,}"


def signed(x: Any, digits: int = 3) -> str:
    """A difference with its sign: ``+0.012`` / ``-0.004`` (a true minus sign)."""
    if missing(x):
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
    if missing(seconds):
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
    if missing(row.get("ci_low")) or missing(row.get("ci_high")):
        return f"{value} [CI undefined]"
    return f"{value} [{f(row['ci_low'])}, {f(row['ci_high'])}]"


def capitalise(text: str) -> str:
    """The first letter in upper case, the rest untouched (``str.capitalize`` lowers the rest)."""
    return text[:1].upper() + text[1:]
