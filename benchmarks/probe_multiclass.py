"""Validation-only sweep of Task 1b settings: how far do they move bacterial-vs-viral AUC?

    python benchmarks/probe_multiclass.py --device cuda --workers 9     # about 2 min on one H200
    python benchmarks/probe_multiclass.py --only ref10 ep20             # a subset (CPU: slow)

Each probe trains a Task 1a network (cpu-profile architecture unless the probe changes it,
no grid, the augmentation setting both Task 1 grids chose) and fine-tunes Task 1b from it,
with the package's own ``train_variant``, then prints the *validation* figures only:
bacterial-vs-viral ROC AUC among pneumonia images, macro one-vs-rest ROC AUC, balanced
accuracy. Test images are never scored here, so the sweep can inform design choices.
Probes run in parallel worker processes (``--workers``); trained networks are cached under
``--cache`` (default a ``probe`` folder in the results cache), so a rerun reprints at once.
``seed`` also moves the validation split: compare probes of the same seed, and read the
seed-1 rows as a measure of noise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
FINE_TUNE = {"lr": 1e-3, "label_smoothing": 0.05}  # MulticlassConfig's defaults, spelled out


class Probe(NamedTuple):
    name: str
    seed: int = 0
    resolution: int = 128
    width: int = 16
    binary_epochs: int = 12
    multiclass_epochs: int = 10
    multiclass: dict[str, Any] = FINE_TUNE


PROBES = [  # most informative first: a sweep cut short still answers the main questions
    Probe("ref10"),
    Probe("ep20", multiclass_epochs=20),
    Probe("ep30", multiclass_epochs=30),
    Probe("lr2e-3_20", multiclass_epochs=20, multiclass={**FINE_TUNE, "lr": 2e-3}),
    Probe("aug20", multiclass_epochs=20, multiclass={**FINE_TUNE, "augment": True}),
    Probe("s1_ref10", seed=1),
    Probe("s1_ep20", seed=1, multiclass_epochs=20),
    Probe("r192_20", resolution=192, multiclass_epochs=20),
    Probe("w32_20", width=32, multiclass_epochs=20),
    Probe("r160_20", resolution=160, multiclass_epochs=20),
    Probe("a8_ep20", binary_epochs=8, multiclass_epochs=20),
    Probe("pat8_30", multiclass_epochs=30, multiclass={**FINE_TUNE, "patience": 8}),
    Probe("aug30", multiclass_epochs=30, multiclass={**FINE_TUNE, "augment": True}),
    Probe("ls0_20", multiclass_epochs=20, multiclass={**FINE_TUNE, "label_smoothing": 0.0}),
    Probe("lr2e-3_10", multiclass={**FINE_TUNE, "lr": 2e-3}),
    Probe("r192_10", resolution=192),
    Probe("w32_10", width=32),
    Probe("r160_10", resolution=160),
]


def configs(probe: Probe, args: argparse.Namespace):
    """The Task 1a and 1b configs of one probe."""
    from pneumo.classification import BinaryConfig, MulticlassConfig

    common = dict(data=args.data, cache=args.cache, device=args.device, seed=probe.seed,
                  resolution=probe.resolution, width=probe.width, augment=False, grid="none",
                  comparators=False, num_workers=args.decode_workers)
    binary = BinaryConfig.create("cpu", **common, epochs=probe.binary_epochs)
    multiclass = MulticlassConfig.create("cpu", **{**common, **probe.multiclass},
                                         epochs=probe.multiclass_epochs)
    return binary, multiclass


def bacterial_vs_viral_auc(targets, proba) -> float:
    """ROC AUC of P(viral | pneumonia) among pneumonia images (targets 1 bacterial, 2 viral)."""
    from sklearn.metrics import roc_auc_score

    sick = targets > 0
    return float(roc_auc_score(targets[sick] == 2, proba[sick, 2] / proba[sick, 1:].sum(1)))


def _setup(probe: Probe, args: argparse.Namespace):
    """A worker's threads, the probe's configs, its decoded data set and the cache."""
    import torch

    from pneumo.data import load_dataset
    from pneumo.results import ResultCache

    torch.set_num_threads(args.threads)
    binary, multiclass = configs(probe, args)
    data = load_dataset(args.data, resolution=probe.resolution, val_fraction=binary.val_fraction,
                        seed=probe.seed, cache_dir=args.cache, num_workers=args.decode_workers)
    return binary, multiclass, data, ResultCache(args.cache)


def run_probe(probe: Probe, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or read) 1a and 1b of one probe; return its validation figures."""
    from pneumo.classification import train_variant

    binary, multiclass, data, cache = _setup(probe, args)
    first = train_variant(binary, data, changes={}, epochs=binary.epochs, cache=cache)
    second = train_variant(multiclass, data, changes={}, epochs=multiclass.epochs, cache=cache,
                           init_state=first.load_model()["state_dict"], init_key=f"probe-{first.path.name}")
    targets = data.subset("val")[1]["target"].to_numpy()
    return {"probe": probe.name, "seed": probe.seed, "resolution": probe.resolution,
            "width": probe.width, "binary_epochs": probe.binary_epochs,
            "multiclass_epochs": probe.multiclass_epochs,
            "multiclass": ", ".join(f"{k}={v}" for k, v in probe.multiclass.items()),
            "val_bacterial_vs_viral_auc": bacterial_vs_viral_auc(targets, second.arrays()["val_proba"]),
            "val_macro_auc": second.metrics["roc_auc"],
            "val_balanced_accuracy": second.metrics["balanced_accuracy"],
            "best_epoch": second.metrics["best_epoch"], "train_seconds": second.metrics["train_seconds"]}


def _worker(job: tuple[Probe, argparse.Namespace]) -> dict[str, Any]:
    probe, args = job
    start = time.perf_counter()
    try:
        row = run_probe(probe, args)
    except Exception as error:  # one failed probe must not lose the others' results
        row = {"probe": probe.name, "error": f"{type(error).__name__}: {error}"}
    row["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(row), flush=True)
    return row


def _train_binary(job: tuple[Probe, argparse.Namespace]) -> None:
    """Train (or read) the 1a network of a probe."""
    from pneumo.classification import train_variant

    probe, args = job
    binary, _, data, cache = _setup(probe, args)
    try:
        train_variant(binary, data, changes={}, epochs=binary.epochs, cache=cache)
    except Exception as error:  # the probes that need this network retry it and report the error
        print(f"Task 1a network of {probe.name} failed: {type(error).__name__}: {error}", flush=True)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("PNEUMO_DATA") or str(ROOT.parent / "shared" / "data" / "chest_xray"),
                        help="Kaggle-layout folder (default: $PNEUMO_DATA, else ../shared/data/chest_xray)")
    parser.add_argument("--cache", default=None, help="results folder (default: <results cache>/probe)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=1, help="probes trained at once")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per worker")
    parser.add_argument("--decode-workers", type=int, default=None, help="image decoding processes")
    parser.add_argument("--only", nargs="+", choices=[p.name for p in PROBES], help="run these probes")
    args = parser.parse_args()

    import pandas as pd

    from pneumo.data import load_dataset
    from pneumo.results import ResultCache
    from pneumo.runner import setup_logging

    setup_logging()
    args.cache = args.cache or str(ResultCache().root / "probe")
    probes = [p for p in PROBES if not args.only or p.name in args.only]
    start = time.perf_counter()
    for resolution in sorted({p.resolution for p in probes}):  # decode once, before the workers
        load_dataset(args.data, resolution=resolution, cache_dir=args.cache, num_workers=args.decode_workers)
    # 1a networks first, one per distinct 1a setting, so no two workers train the same one.
    firsts = {(p.seed, p.resolution, p.width, p.binary_epochs): p for p in probes}
    with mp.get_context("spawn").Pool(args.workers) as pool:
        pool.map(_train_binary, [(p, args) for p in firsts.values()], chunksize=1)
        rows = pool.map(_worker, [(p, args) for p in probes], chunksize=1)
    table = pd.DataFrame(rows)
    print(f"\n{len(probes)} probes in {time.perf_counter() - start:.0f} s; validation figures only\n")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(table.drop(columns=["wall_s"]).to_string(index=False))
    auc = table.get("val_bacterial_vs_viral_auc", pd.Series(dtype=float)).dropna()
    if len(auc):
        print(f"\nvalidation bacterial-vs-viral ROC AUC over {len(auc)} probes: "
              f"min {auc.min():.3f}, median {auc.median():.3f}, max {auc.max():.3f}")


if __name__ == "__main__":
    main()
