"""Benchmark of Task 1 on real data: prints measured figures, asserts nothing.

    python benchmarks/bench_task1.py --data ../shared/data/chest_xray --profile cpu

Measures, on this machine:

1. the decode cache: time to build it from JPEGs, and to reload it;
2. training throughput (images/s) and the share of each step spent waiting for data;
3. the same epoch with a plain torchvision ``ImageFolder`` + ``DataLoader`` pipeline that decodes
   every JPEG every epoch, as a ratio;
4. wall time of Task 1a and Task 1b without the grid, and their test metrics.

Results go to a fresh cache folder (``--cache``, default a temporary one) so nothing is reused.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from pneumo.classification import BinaryConfig, MulticlassConfig, run_classification
from pneumo.data import load_dataset
from pneumo.device import configure_threads, pick_device, seed_everything
from pneumo.models import build_model
from _args import benchmark_parser
from pneumo.runner import setup_logging

ROOT = Path(__file__).resolve().parent.parent


def imagefolder_epoch(data_root: Path, config: BinaryConfig, max_images: int) -> float:
    """Images/s of one training pass with decode-every-epoch torchvision loading."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Grayscale(1), transforms.Resize(config.resolution),
        transforms.CenterCrop(config.resolution), transforms.ToTensor(),
    ])
    folder = datasets.ImageFolder(str(data_root / "train"), transform=tf)
    subset = torch.utils.data.Subset(folder, range(min(max_images, len(folder))))
    loader = torch.utils.data.DataLoader(subset, batch_size=config.batch_size, shuffle=True,
                                         num_workers=torch.get_num_threads())
    device = pick_device(config.device)
    model = build_model({**config.key_dict(), "arch": "vgg", "num_classes": 2}).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr)
    model.train()
    seen, wait, start = 0, 0.0, time.perf_counter()
    tick = time.perf_counter()
    for x, y in loader:
        wait += time.perf_counter() - tick
        x = ((x - 0.5) / 0.25).to(device).contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(x), (y > 0).long().to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        seen += len(x)
        tick = time.perf_counter()
    elapsed = time.perf_counter() - start
    print(f"  ImageFolder+DataLoader: {seen / elapsed:.1f} img/s, waiting for data {wait / elapsed:.1%}")
    return seen / elapsed


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], cache_help="results folder (default: a fresh temporary one)")
    parser.add_argument("--skip-tasks", action="store_true", help="only the data-pipeline figures")
    args = parser.parse_args()
    setup_logging()
    threads = configure_threads()
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="pneumo-bench-"))
    figures: dict[str, float] = {}
    binary = BinaryConfig.create(args.profile, data=args.data, cache=str(cache), grid="none",
                                 device=args.device)
    print(f"pneumo Task 1 benchmark: profile {binary.profile}, {threads} threads, "
          f"device {pick_device(args.device)}, cache {cache}")

    start = time.perf_counter()
    data = load_dataset(args.data, resolution=binary.resolution, cache_dir=cache)
    figures["decode_build_s"] = time.perf_counter() - start
    start = time.perf_counter()
    load_dataset(args.data, resolution=binary.resolution, cache_dir=cache)
    figures["decode_reload_s"] = time.perf_counter() - start
    print(f"decode cache: built in {figures['decode_build_s']:.1f} s for {len(data)} images at "
          f"{binary.resolution} px, reloaded in {figures['decode_reload_s']:.2f} s")

    if not args.skip_tasks:
        start = time.perf_counter()
        entry_1a = run_classification(binary)
        figures["task1a_wall_s"] = time.perf_counter() - start
        history = entry_1a.table("history")
        figures["train_img_per_s"] = float(history["images_per_s"].median())
        figures["data_wait_fraction"] = float(history["data_wait_fraction"].median())
        print(f"training: {figures['train_img_per_s']:.1f} img/s (median epoch), "
              f"waiting for data {figures['data_wait_fraction']:.2%} of each step")
        seed_everything(0)
        figures["imagefolder_img_per_s"] = imagefolder_epoch(Path(args.data), binary, max_images=640)
        figures["speedup_vs_imagefolder"] = figures["train_img_per_s"] / figures["imagefolder_img_per_s"]
        print(f"  in-memory pipeline is {figures['speedup_vs_imagefolder']:.2f}x the ImageFolder epoch")

        multiclass = MulticlassConfig.create(args.profile, data=args.data, cache=str(cache), grid="none",
                                             device=args.device)
        start = time.perf_counter()
        entry_1b = run_classification(multiclass)
        figures["task1b_wall_s"] = time.perf_counter() - start
        m1a, m1b = entry_1a.metrics, entry_1b.metrics
        print(f"Task 1a: {figures['task1a_wall_s'] / 60:.1f} min; test ROC-AUC {m1a['test_roc_auc']:.4f}, "
              f"accuracy {m1a['test_accuracy']:.4f}, sensitivity {m1a['test_sensitivity']:.4f}, "
              f"specificity {m1a['test_specificity']:.4f} (threshold {m1a['threshold']:.3f} from validation)")
        print(f"Task 1b: {figures['task1b_wall_s'] / 60:.1f} min; test accuracy {m1b['test_accuracy']:.4f}, "
              f"balanced accuracy {m1b['test_balanced_accuracy']:.4f}, macro ROC-AUC {m1b['test_roc_auc']:.4f}, "
              f"bacterial-vs-viral ROC-AUC {m1b['bacterial_vs_viral_roc_auc']:.4f}, "
              f"induced binary ROC-AUC {m1b['induced_binary_roc_auc']:.4f}")
        print(f"both tasks: {(figures['task1a_wall_s'] + figures['task1b_wall_s']) / 60:.1f} min")
        figures.update({f"1a_{k}": v for k, v in m1a.items() if isinstance(v, (int, float))})
        figures.update({f"1b_{k}": v for k, v in m1b.items() if isinstance(v, (int, float))})
    out = cache / "benchmark.json"
    out.write_text(json.dumps(figures, indent=2))
    print(f"figures written to {out}")


if __name__ == "__main__":
    main()
