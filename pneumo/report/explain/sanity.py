"""The Task 4 sanity checks: do the maps depend on the weights, and do they beat a random order?

The randomisation test (rank correlation ρ with the trained maps after re-initialising the
head, or every layer) and the deletion/insertion curves against a random pixel order, as a
table, the methods that pass, and sentences.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd

from pneumo.explain import METHODS, NETWORKS
from pneumo.report.explain.names import SHOWN, _network, method_list, method_name
from pneumo.report.tables import markdown
from pneumo.report.text import fmt_ci, join_words, num

__all__ = ["RHO_CUTOFF", "method_table", "beats_random", "beat_text", "passing_methods", "pass_text",
           "randomisation_text", "head_text"]

#: A map "depends on the weights" when its rank correlation with the trained maps is below this.
RHO_CUTOFF = 0.5
#: How many methods, in words (``"all three"``).
_NUMBER_WORDS = ("no", "one", "both", "all three", "all four", "all five")


def _ci_cell(row: pd.Series, column: str, *, percent: bool = False) -> str:
    """``"value [low, high]"`` from a ``methods`` row's ``column`` and its ``_ci_low`` / ``_ci_high``."""
    return fmt_ci({"value": row[column], "ci_low": row[f"{column}_ci_low"], "ci_high": row[f"{column}_ci_high"]},
                  3, percent=percent)


def method_table(methods: pd.DataFrame) -> pd.DataFrame:
    """The method comparison as a display table (one row per network and method).

    Parameters
    ----------
    methods
        The entry's ``methods`` table: ``network, method`` and, per figure, the value with
        ``_ci_low`` / ``_ci_high`` columns (``rho_head``, ``rho_all``, ``deletion_auc``,
        ``insertion_auc``, ``lungs``, ``border``; the random order has only the curves).
    """
    rows = []
    for _, row in methods.iterrows():
        sane = row["method"] != "random"  # the random order has no map to correlate or locate
        rows.append({
            "Network": _network(row["network"]), "Method": method_name(row["method"]),
            "ρ, head random": _ci_cell(row, "rho_head") if sane else "–",
            "ρ, all random": _ci_cell(row, "rho_all") if sane else "–",
            "Deletion AUC ↓": _ci_cell(row, "deletion_auc"),
            "Insertion AUC ↑": _ci_cell(row, "insertion_auc"),
            "In lungs": _ci_cell(row, "lungs", percent=True) if sane else "–",
            "In border": _ci_cell(row, "border", percent=True) if sane else "–",
        })
    return pd.DataFrame(rows)


def beats_random(methods: pd.DataFrame, network: str) -> list[str]:
    """Methods whose mean deletion AUC is below and insertion AUC above the random order's."""
    m = methods.set_index(["network", "method"])
    rnd = m.loc[(network, "random")]
    return [k for k in METHODS if m.loc[(network, k), "deletion_auc"] < rnd["deletion_auc"]
            and m.loc[(network, k), "insertion_auc"] > rnd["insertion_auc"]]


def beat_text(beat: Mapping[str, Sequence[str]]) -> str:
    """Per network, which methods beat the random order on both curves (and which do not)."""
    sentences = []
    for net, winners in beat.items():
        text = (f"For network {_network(net)}, {method_list(winners)} "
                f"{'beats' if len(winners) == 1 else 'beat'} the random order on both curves")
        losers = [m for m in METHODS if m not in winners]
        if winners and losers:
            text += f"; {method_list(losers)} {'does' if len(losers) == 1 else 'do'} not."
        else:
            text += "."
        sentences.append(text)
    return " ".join(sentences)


def passing_methods(rho_all: Mapping[str, Mapping[str, float]], beat: Mapping[str, Sequence[str]]) -> list[str]:
    """Methods with ρ below :data:`RHO_CUTOFF` after full randomisation that also beat the random
    order, for every network."""
    return [m for m in METHODS if all(rho_all[net][m] < RHO_CUTOFF and m in beat[net] for net in rho_all)]


def pass_text(passes: Sequence[str]) -> str:
    """Which methods pass both sanity checks, as a sentence."""
    criteria = (f"ρ below {RHO_CUTOFF} after every layer is re-initialised, and both curves better than "
                "the random order, for both networks")
    if not passes:
        return f"No method passes both criteria ({criteria}), so every map here should be read with caution."
    fails = [m for m in METHODS if m not in passes]
    text = f"By both criteria ({criteria}) {method_list(passes)} {'passes' if len(passes) == 1 else 'pass'}"
    return text + (f"; {method_list(fails)} {'does' if len(fails) == 1 else 'do'} not." if fails else ".")


def randomisation_text(rho_all: Mapping[str, Mapping[str, float]], main: str = SHOWN):
    """Which method's maps survive full randomisation best and worst (Markdown: it may cite a table).

    Parameters
    ----------
    rho_all
        ``{network: {method: mean ρ after every layer is re-initialised}}``.
    main
        The network whose numbers are quoted; the others are compared with its order.
    """
    def order(net):
        return max(METHODS, key=lambda m: rho_all[net][m]), min(METHODS, key=lambda m: rho_all[net][m])

    most, least = order(main)
    others = [net for net in rho_all if net != main]
    same = all(order(net) == (most, least) for net in others)
    return markdown(
        f"After every layer is re-initialised, the maps of {method_name(most)} stay closest to the trained "
        f"network's (network {_network(main)}: ρ = {num(rho_all[main][most], 2)}), those of "
        f"{method_name(least)} change most (ρ = {num(rho_all[main][least], 2)}); "
        f"network {join_words([_network(n) for n in others])} gives "
        + ("the same order." if same else "a different order (@tbl-explain-methods)."))


def head_text(rho_head: Mapping[str, Mapping[str, float]]):
    """What re-initialising only the classifier head does to the maps (Markdown: it cites)."""
    sticky = [m for m in METHODS if min(rho_head[net][m] for net in rho_head) > RHO_CUTOFF]
    if sticky:
        return markdown(
            f"Re-initialising only the classifier head leaves the maps of {method_list(sticky)} largely "
            f"unchanged (ρ above {RHO_CUTOFF} for both networks): they mostly reflect the image and the "
            "convolutional features rather than which class is explained, the behaviour @adebayo2018 warn "
            "about for gradient-times-input methods.")
    return markdown(
        "Already re-initialising only the classifier head changes every method's maps substantially "
        f"(ρ at most {RHO_CUTOFF}), so {_NUMBER_WORDS[min(len(METHODS), len(_NUMBER_WORDS) - 1)]} depend "
        "on the decision layer.")


def _by_network(methods: pd.DataFrame, column: str) -> dict[str, dict[str, float]]:
    m = methods.set_index(["network", "method"])
    return {net: {k: float(m.loc[(net, k), column]) for k in METHODS} for net in NETWORKS}


def _sanity(methods: pd.DataFrame) -> dict[str, Any]:
    """The randomisation and deletion/insertion results: table, sentences, best methods."""
    rho_all, rho_head = _by_network(methods, "rho_all"), _by_network(methods, "rho_head")
    beat = {net: beats_random(methods, net) for net in NETWORKS}
    passes = passing_methods(rho_all, beat)
    m = methods.set_index(["network", "method"])
    return dict(
        method_table=method_table(methods), beat=beat, beat_text=beat_text(beat),
        passes=passes, pass_text=pass_text(passes),
        rand_text=randomisation_text(rho_all), head_text=head_text(rho_head),
        best_deletion={net: method_name(min(METHODS, key=lambda k: m.loc[(net, k), "deletion_auc"]))
                       for net in NETWORKS},
        best_insertion={net: method_name(max(METHODS, key=lambda k: m.loc[(net, k), "insertion_auc"]))
                        for net in NETWORKS},
    )
