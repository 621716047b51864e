"""Data layer: labels, folder scanning, decode cache, leakage-free splits and phantoms.

Public API::

    from pneumo.data import (CLASSES, BINARY_CLASSES, parse_label, parse_patient, locate_data,
                             scan_folder, load_dataset, XrayDataset, make_phantoms,
                             DataLayoutError)

Importing this package does not import torch.
"""

from pneumo.data.dataset import load_dataset, locate_data
from pneumo.data.labels import BINARY_CLASSES, CLASSES, parse_label, parse_patient
from pneumo.data.phantom_render import render_phantom
from pneumo.data.phantoms import make_phantoms
from pneumo.data.scan import DataLayoutError, scan_folder
from pneumo.data.xray_dataset import XrayDataset

__all__ = [
    "CLASSES",
    "BINARY_CLASSES",
    "parse_label",
    "parse_patient",
    "locate_data",
    "scan_folder",
    "load_dataset",
    "XrayDataset",
    "make_phantoms",
    "render_phantom",
    "DataLayoutError",
]
