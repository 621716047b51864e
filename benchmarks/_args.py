"""Command-line options every benchmark script takes (data, profile, cache, device)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def benchmark_parser(description: str, *, cache_help: str) -> argparse.ArgumentParser:
    """A parser with ``--data`` (default: $PNEUMO_DATA, else ../shared/data/chest_xray),
    ``--profile``, ``--cache`` (``cache_help`` says its default) and ``--device``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=os.environ.get("PNEUMO_DATA") or str(ROOT.parent / "shared" / "data" / "chest_xray"),
                        help="Kaggle-layout folder (default: $PNEUMO_DATA, else ../shared/data/chest_xray)")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--cache", default=None, help=cache_help)
    parser.add_argument("--device", default="auto")
    return parser
