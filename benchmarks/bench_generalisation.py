"""What survives a shift: Task 1's training and inference alternatives on the shift benchmark.

    python benchmarks/bench_generalisation.py --profile cpu --seeds 3 --cache /tmp/gen

Computes (or reads from the cache) Task 1a and 1b with ``--seeds`` seeds, prints each task's
seed table (every seed network's test figures, their spread and the seed ensemble's), then compares,
for Task 1a's chosen variant, predictors that differ in one respect:

- the first seed's network alone (the pipeline's classifier with ``seeds`` = 1);
- trained again with mixup (α = ``--mixup``) or label smoothing (``--label-smoothing``), each a
  variant entry of the cache at the final epoch budget;
- that network with test-time augmentation (``--tta`` jittered views of every film);
- the seed ensemble (the mean of the seeds' probabilities, the pipeline's classifier with
  several seeds), with and without TTA.

Each is judged on *validation* under the shift benchmark (:mod:`pneumo.shift`): ROC AUC as
stored, mean and worst over the shifts, and the balanced accuracy and specificity of its own
threshold (chosen by the pipeline's rule) over the shifts. Their test figures are printed in
separate columns for the closing note; they choose nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import benchmark_parser  # noqa: E402

from pneumo.classification import (BinaryConfig, MulticlassConfig, grid_variants, run_classification,  # noqa: E402
                                   train_variant)
from pneumo.data import load_dataset  # noqa: E402
from pneumo.device import pick_device  # noqa: E402
from pneumo.metrics import binary_metrics  # noqa: E402
from pneumo.results import ResultCache  # noqa: E402
from pneumo.shift import robustness_summary, threshold_under_shift  # noqa: E402
from pneumo.training import predict_proba  # noqa: E402
from pneumo.upstream import load_classifier  # noqa: E402


def judge(name: str, predict, data, config: BinaryConfig) -> dict:
    """A 1a predictor (uint8 (N, H, W) -> (N,) P(pneumonia)) on shifted validation, then on test."""
    start = time.perf_counter()
    val_x, val_rows = data.subset("val")
    test_x, test_rows = data.subset("test")
    threshold, rule, shifts, _ = threshold_under_shift(predict, val_x, val_rows["binary"].to_numpy(),
                                                      rule=config.threshold_rule, seed=config.seed)
    auc, bal = robustness_summary(shifts, "roc_auc"), robustness_summary(shifts, "balanced_accuracy")
    test = binary_metrics(test_rows["binary"].to_numpy(), predict(test_x), threshold=threshold)
    return {"predictor": name, "val_auc": auc["clean"], "shift_auc_mean": auc["mean"], "shift_auc_worst": auc["worst"],
            "shift_bal_acc_mean": bal["mean"], "shift_bal_acc_worst": bal["worst"],
            "shift_spec_mean": robustness_summary(shifts, "specificity")["mean"], "threshold": threshold,
            "rule": rule, "test_auc": float(test["roc_auc"]), "test_acc": float(test["accuracy"]),
            "test_spec": float(test["specificity"]), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], cache_help="results folder (default: the project's)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of Task 1a and 1b (default 3)")
    parser.add_argument("--mixup", type=float, default=0.2, help="mixup's alpha of the mixup alternative")
    parser.add_argument("--label-smoothing", type=float, default=0.1, help="of the label-smoothing alternative")
    parser.add_argument("--tta", type=int, default=4, help="jittered views of test-time augmentation")
    args = parser.parse_args()
    pd.set_option("display.width", 200, "display.max_columns", 30, "display.precision", 3)
    shared = dict(data=args.data or None, cache=args.cache, device=args.device, seeds=args.seeds)

    entries = {}
    for config_type in (BinaryConfig, MulticlassConfig):
        config = config_type.create(args.profile, **shared)
        start = time.perf_counter()
        entries[config_type] = entry = run_classification(config)
        print(f"\n{config_type.__name__} ({time.perf_counter() - start:.0f} s, entry {entry.path.name}); seeds:")
        print(entry.table("seeds").to_string(index=False) if entry.has_table("seeds") else "  (one seed)")

    config = BinaryConfig.create(args.profile, **shared)
    binary = entries[BinaryConfig]
    device = pick_device(args.device)
    cache = ResultCache(config.cache)
    changes = dict(grid_variants(config))[binary.metrics["chosen_variant"]]
    # Task 1a's own data set (with any pneumonia films without a subtype), so the variant keys match.
    data = load_dataset(config.data, resolution=changes.get("resolution", config.resolution),
                        val_fraction=config.val_fraction, seed=config.seed, cache_dir=cache.root,
                        num_workers=config.num_workers)
    first, _ = load_classifier(binary, device)  # the saved network: the first seed's

    def scorer(model, tta=0):
        return lambda x: predict_proba(model, x, device=device, tta=tta, seed=config.seed)[:, 1]

    members = [first] + [
        load_classifier(train_variant(config.replace(seed=config.seed + i), data, changes=changes,
                                      epochs=config.epochs, cache=cache), device)[0]
        for i in range(1, config.seeds)]

    def ensemble(tta=0):
        return lambda x: np.mean([scorer(m, tta)(x) for m in members], axis=0)

    rows = [judge("first seed", scorer(first), data, config),
            judge(f"first seed, TTA +{args.tta} views", scorer(first, args.tta), data, config)]
    if len(members) > 1:
        rows += [judge(f"seed ensemble of {len(members)}", ensemble(), data, config),
                 judge(f"seed ensemble of {len(members)}, TTA", ensemble(args.tta), data, config)]
    for name, change in ((f"mixup alpha={args.mixup:g}", {"mixup": args.mixup}),
                         (f"label smoothing {args.label_smoothing:g}", {"label_smoothing": args.label_smoothing})):
        start = time.perf_counter()
        entry = train_variant(config, data, changes={**changes, **change}, epochs=config.epochs, cache=cache)
        row = judge(name, scorer(load_classifier(entry, device)[0]), data, config)
        rows.append({**row, "seconds": time.perf_counter() - start})
    table = pd.DataFrame(rows)
    print(f"\nTask 1a alternatives around the chosen variant ({binary.metrics['chosen_variant']}): validation "
          "under shift chooses; the test columns (test_*) are for the record only")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
