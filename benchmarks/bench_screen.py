"""Does a cheap grid screen rank the Task 1a variants as the full budget does? Prints, asserts nothing.

    python benchmarks/bench_screen.py --profile cpu --budgets 1 2 4      # a fresh temporary cache
    python benchmarks/bench_screen.py --profile cpu --cache results      # reuse what a cache holds

Trains every variant of the profile's Task 1a grid (:func:`pneumo.classification.grid_variants`)
at each screening budget (``--budgets`` epochs) and at the full budget (the profile's
``epochs``), each run on its own learning-rate schedule as the grid trains it, and prints:

1. per variant and budget: validation ROC AUC, its mean and worst over the shift benchmark
   (:mod:`pneumo.shift`), and the training time;
2. per budget and criterion (the grid's ``shift`` and ``plain`` selection): Spearman's and
   Kendall's rank correlation with the full-budget ranking, whether the winner is the same,
   and the full-budget rank of the cheap screen's winner.

Validation only: no test image is read. Every run is a cache entry, so the full-budget run of
the variant the grid chooses is the one the task itself would train.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import benchmark_parser  # noqa: E402

from pneumo.shift import SELECTION_CRITERIA  # noqa: E402


def screen(config, budgets: list[int]) -> pd.DataFrame:
    """One row per (variant, budget): validation figures and training seconds."""
    from pneumo.classification import _load_like, grid_variants, train_variant
    from pneumo.models.xrv import XRVWeightsUnavailable
    from pneumo.results import ResultCache

    cache = ResultCache(config.cache)
    datasets = {}
    rows = []
    for epochs in budgets:
        for name, changes in grid_variants(config):
            resolution = changes.get("resolution", config.resolution)
            if resolution not in datasets:
                datasets[resolution] = _load_like(config.replace(resolution=resolution), cache)
            start = time.perf_counter()
            try:
                entry = train_variant(config, datasets[resolution], changes=changes, epochs=epochs, cache=cache)
            except XRVWeightsUnavailable as error:
                print(f"skipped {name}: {error}")
                continue
            m = entry.metrics
            rows.append({"variant": name, "epochs": epochs, "val_roc_auc": m["roc_auc"],
                         "val_shift_roc_auc_mean": m["val_shift_roc_auc_mean"],
                         "val_shift_roc_auc_worst": m["val_shift_roc_auc_worst"],
                         "epochs_run": m["epochs_run"], "train_seconds": m["train_seconds"],
                         "this_call_seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def agreement(runs: pd.DataFrame, full: int) -> pd.DataFrame:
    """Per cheap budget and selection criterion: rank agreement with the full budget."""
    rows = []
    for selection, column in SELECTION_CRITERIA.items():
        table = runs.pivot(index="variant", columns="epochs", values=column)
        reference = table[full]
        full_rank = reference.rank(ascending=False)
        for epochs in table.columns:
            if epochs == full:
                continue
            cheap = table[epochs]
            winner = cheap.idxmax()
            rows.append({"selection": selection, "screen epochs": epochs, "full epochs": full,
                         "spearman": spearmanr(cheap, reference).statistic,
                         "kendall": kendalltau(cheap, reference).statistic,
                         "same winner": winner == reference.idxmax(), "screen winner": winner,
                         "its full-budget rank": int(full_rank[winner]),
                         "screen cost (s)": float(runs.loc[runs["epochs"] == epochs, "train_seconds"].sum())})
    return pd.DataFrame(rows)


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], cache_help="results folder (default: a new temporary one)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4], help="screening epochs to compare")
    args = parser.parse_args()

    from pneumo.classification import BinaryConfig
    from pneumo.device import configure_threads
    from pneumo.runner import setup_logging

    setup_logging()
    configure_threads()
    cache = args.cache or tempfile.mkdtemp(prefix="pneumo-screen-")
    config = BinaryConfig.create(args.profile, data=args.data, cache=cache, device=args.device)
    budgets = sorted(set(args.budgets) | {config.epochs})
    runs = screen(config, budgets)
    pd.set_option("display.width", 160, "display.max_columns", 12)
    print(f"\nTask 1a grid, profile {args.profile} ({config.resolution} px), data {args.data}, cache {cache}")
    print(runs.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nrank agreement with the full budget:")
    print(agreement(runs, config.epochs).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
