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
# # Task 1b: normal, bacterial or viral?
#
# The Task 1a network, fine-tuned with a three-class head, separates normal, bacterial and
# viral pneumonia. A small grid (initialisation from 1a or from scratch, class balancing,
# augmentation) is compared on the patient-grouped *validation* split; the winner is tested
# once, and its induced normal-vs-pneumonia figures are compared with 1a's. Run it as
#
#     python tasks/multiclass.py --device cuda --epochs 30
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
init = None

# %%
from pneumo.classification import MulticlassConfig, run_classification
from pneumo.runner import setup_logging, task_config

setup_logging()
config = task_config(MulticlassConfig, globals())
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

# %% [markdown]
# Among pneumonia images: bacterial vs viral.

# %%
entry.table("bacterial_vs_viral")

# %%
print(entry.path)
