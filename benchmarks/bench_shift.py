"""The shift benchmark on validation: how Task 1's networks hold up when the films change.

    python benchmarks/bench_shift.py --profile cpu                      # the report's networks
    python benchmarks/bench_shift.py --profile cpu --variants           # and every grid variant

Reads the cached Task 1a and 1b entries of the given data and profile (compute them first,
e.g. with ``make report``), scores each network on its *validation* images under every shift
of :data:`pneumo.shift.SHIFTS`, and prints:

1. Task 1a per shift: ROC AUC, and accuracy / sensitivity / specificity at the threshold the
   pipeline chose (Youden's J on validation);
2. the threshold rules of :func:`pneumo.shift.compare_threshold_rules`, each judged on the
   shifts it did not see: mean and worst balanced accuracy and specificity;
3. Task 1b per shift: accuracy, balanced accuracy, and bacterial-vs-viral ROC AUC;
4. with ``--variants``: every cached Task 1a grid variant, its plain validation ROC AUC beside
   its mean and worst ROC AUC under the shifts, and the rank correlation of the two orders.

Test images are never scored here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import benchmark_parser  # noqa: E402

from pneumo.data import load_dataset  # noqa: E402
from pneumo.device import pick_device  # noqa: E402
from pneumo.metrics import binary_metrics  # noqa: E402
from pneumo.results import Entry, ResultCache  # noqa: E402
from pneumo.runner import lookup_task  # noqa: E402
from pneumo.shift import (choose_threshold_rule, compare_threshold_rules, multiclass_shift_metrics,  # noqa: E402
                          robustness_summary, score_under_shifts, summarise_threshold_rules)
from pneumo.training import predict_proba  # noqa: E402
from pneumo.upstream import entry_dataset, load_classifier  # noqa: E402


def _binary(model, images, y, threshold, device) -> tuple[pd.DataFrame, dict]:
    def score(x):
        return predict_proba(model, x, device=device)[:, 1]

    def metrics(y_true, s):
        m = binary_metrics(y_true, s, threshold=threshold)
        return {k: float(m[k]) for k in ("roc_auc", "accuracy", "sensitivity", "specificity")}

    return score_under_shifts(score, images, y, metrics)


def _multiclass(model, images, y, device) -> pd.DataFrame:
    return score_under_shifts(lambda x: predict_proba(model, x, device=device), images, y,
                              multiclass_shift_metrics)[0]


def _variants(cache: ResultCache, data: str, device) -> pd.DataFrame:
    """Every cached Task 1a grid variant: plain validation ROC AUC against its shifted ROC AUC."""
    rows = []
    for path in sorted((cache.root / "binary-variant").glob("[!.]*")):
        entry = Entry(path)
        if not entry.exists:
            continue
        params = entry.params
        if params.get("arch", "vgg") != "vgg":
            continue
        dataset = load_dataset(data, resolution=int(params["resolution"]), val_fraction=params["val_fraction"],
                               seed=params["seed"], cache_dir=cache.root)
        model, _ = load_classifier(entry, device)
        x, rows_val = dataset.subset("val")
        y = rows_val["binary"].to_numpy()
        table, _ = _binary(model, x, y, 0.5, device)
        summary = robustness_summary(table, "roc_auc")
        changed = {k: v for k, v in params.items() if k in ("balance", "augment", "intensity", "width",
                                                              "depth", "resolution", "epochs", "border_mask")}
        rows.append({"variant": ", ".join(f"{k}={v}" for k, v in changed.items()),
                     "val_roc_auc": entry.metrics["roc_auc"], "shifted_mean_roc_auc": summary["mean"],
                     "shifted_worst_roc_auc": summary["worst"], "worst_shift": summary["worst_shift"]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], cache_help="results folder (default: the project's)")
    parser.add_argument("--variants", action="store_true", help="also score every cached Task 1a grid variant")
    parser.add_argument("--entries", nargs=2, metavar=("BINARY", "MULTICLASS"),
                        help="score these Task 1a and 1b entry folders instead of the profile's")
    args = parser.parse_args()
    pd.set_option("display.width", 160, "display.max_columns", 20, "display.precision", 3)
    device = pick_device(args.device)
    args.data = args.data or None  # --data "": the synthetic phantoms
    shared = dict(data=args.data, cache=args.cache)
    if args.entries:
        binary, multiclass = (Entry(path) for path in args.entries)
    else:
        binary, multiclass = (lookup_task(name, args.profile, **shared) for name in ("binary", "multiclass"))
    for entry in (binary, multiclass):
        if not entry.exists:
            sys.exit(f"bench_shift: no cached entry {entry.path}; compute it first (make report, or "
                     f"python tasks/{entry.path.parent.name}.py --profile {args.profile} --data {args.data})")

    model, _ = load_classifier(binary, device)
    x, rows = entry_dataset(binary, data=args.data, cache=args.cache).subset("val")
    y = rows["binary"].to_numpy()
    threshold = binary.metrics["threshold"]
    table, scores = _binary(model, x, y, threshold, device)
    print(f"\nTask 1a on validation ({len(y)} images) under shifts, threshold {threshold:.3f} "
          f"({binary.metrics['threshold_rule']}):")
    print(table.to_string(index=False))
    for metric in ("roc_auc", "accuracy", "specificity"):
        print(f"  {metric}: {robustness_summary(table, metric)}")

    comparison = compare_threshold_rules(y, scores)
    print("\nThreshold rules, each judged on the shifts it did not see (leave one shift out):")
    print(summarise_threshold_rules(comparison).to_string())
    print(f"  chosen by mean balanced accuracy under shift: {choose_threshold_rule(comparison)}")

    model_1b, _ = load_classifier(multiclass, device)
    x, rows = entry_dataset(multiclass, data=args.data, cache=args.cache).subset("val")
    table_1b = _multiclass(model_1b, x, rows["target"].to_numpy(), device)
    print("\nTask 1b on validation under shifts:")
    print(table_1b.to_string(index=False))

    if args.variants:
        from scipy.stats import spearmanr

        cache = ResultCache(args.cache if args.cache else binary.path.parent.parent if args.entries else None)
        variants = _variants(cache, args.data, device)
        print("\nTask 1a grid variants (cached), validation ROC AUC plain and under shifts:")
        print(variants.sort_values("val_roc_auc", ascending=False).to_string(index=False))
        for column in ("shifted_mean_roc_auc", "shifted_worst_roc_auc"):
            rho = spearmanr(variants["val_roc_auc"], variants[column]).statistic
            print(f"  Spearman rho, val_roc_auc vs {column}: {rho:.2f}")


if __name__ == "__main__":
    main()
