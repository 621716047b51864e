# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Task 1a: healthy or sick?
#
# A VGG-style CNN trained from scratch tells normal chest X-rays from pneumonia. A small grid
# of design variants is trained on *train* and compared on the patient-grouped *validation*
# split; the winner is tested once. Run it as
#
#     python tasks/binary.py --device cuda --epochs 30
#
# or through papermill / the report. Every config field is a parameter (None: the profile's).

# %% tags=["parameters"]
profile = None
data = None
seed = None
bootstrap = None
device = None
num_workers = None
cache = None
force = None
resolution = None
width = None
depth = None
convs_per_block = None
dropout = None
intensity = None
epochs = None
grid = None
train_workers = None
grid_epochs = None
batch_size = None
lr = None
weight_decay = None
warmup_epochs = None
patience = None
balance = None
augment = None
border_mask = None
label_smoothing = None
mixup = None
seeds = None
selection = None
val_fraction = None
comparators = None
threshold_rule = None

# %%
from pneumo.classification import BinaryConfig, run_classification
from pneumo.runner import setup_logging, task_config

setup_logging()
config = task_config(BinaryConfig, globals())
config

# %% [markdown]
# Train the grid, choose on validation, test the winner once (or read the cached result).

# %%
entry = run_classification(config)
entry.table("grid")

# %% [markdown]
# Headline test figures with 95% patient-bootstrap confidence intervals.

# %%
entry.table("test_metrics")

# %%
print(entry.path)
