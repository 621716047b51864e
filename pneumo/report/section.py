"""The value a section function returns: everything one report section shows, by name."""

from __future__ import annotations

import types
from typing import Any

__all__ = ["Section"]


class Section(types.SimpleNamespace):
    """Numbers, tables and sentences of one report section, read as attributes.

    A section function (e.g. :func:`pneumo.report.binary_section`) computes them from the
    cache entries; the ``.qmd`` only reads them (`` `{python} s.threshold` ``) and makes one
    call per figure or table. A name the section does not have raises an ``AttributeError``
    that lists the names it has.
    """

    def __getattr__(self, name: str) -> Any:  # only reached when the attribute is missing
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"this section has no {name!r}; it has: {', '.join(sorted(vars(self)))}")
