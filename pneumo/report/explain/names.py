"""How the Task 4 section names the methods and the networks in a sentence, and which network it shows."""

from __future__ import annotations

from typing import Sequence

from pneumo.explain import METHOD_NAMES
from pneumo.plots.explain import NETWORK_LABELS
from pneumo.report.text import join_words

__all__ = ["SHOWN", "method_name", "method_list"]

#: The network whose images, lung template and randomised maps the figures show (the task
#: chooses the images by this network's outcome).
SHOWN = "multiclass"


def method_name(method: str) -> str:
    """A method's name as it reads inside a sentence: ``"integrated gradients"``, ``"Grad-CAM"``.

    :data:`pneumo.explain.METHOD_NAMES` starts each name with a capital; names that are not
    acronyms or proper names (no capital after the first letter) are lowered.
    """
    name = METHOD_NAMES.get(method, method)
    return name if any(c.isupper() for c in name[1:]) else name[:1].lower() + name[1:]


def method_list(methods: Sequence[str]) -> str:
    """``"Grad-CAM, integrated gradients and SHAP"``; ``"none of the methods"`` when empty."""
    return join_words([method_name(m) for m in methods]) if methods else "none of the methods"


def _network(name: str) -> str:
    """A network's label in the text (:data:`pneumo.plots.explain.NETWORK_LABELS`)."""
    return NETWORK_LABELS.get(name, name)
