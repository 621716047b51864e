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
# # Task 4: what drives the decisions?
#
# Attribution maps (Grad-CAM at every block, integrated gradients, SHAP) of the Task 1a and
# 1b networks on chosen test images, the sanity checks that say whether the maps are worth
# reading (model-parameter randomisation, deletion / insertion curves), the share of the
# attribution inside the lung fields, and the layers and neurons of one network. The Task 1
# networks are read from the results cache (computed first when missing). Run it as
#
#     python tasks/explain.py --device cuda --profile gpu
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
per_group = None
ig_steps = None
shap_samples = None
shap_background = None
sanity_images = None
perturbation_steps = None
random_orders = None
all_test_gradcam = None
lung_quantile = None
neuron_network = None
neuron_channels = None
patch_images = None
top_patches = None
maxact_steps = None
class_channels = None

# %%
from pneumo.explain import ExplainConfig, run_explain
from pneumo.runner import setup_logging, task_config

setup_logging()
config = task_config(ExplainConfig, globals())
config

# %% [markdown]
# Compute the maps and checks (or read the cached result). The methods compared: rank
# correlation with the maps of a fully randomised network (low is good), deletion (low is
# good) and insertion (high is good) areas against a random pixel order, and the share of
# the positive attribution inside the lung template.

# %%
entry = run_explain(config)
entry.table("methods")[["network", "method", "rho_all", "deletion_auc", "insertion_auc", "lungs"]]

# %% [markdown]
# Grad-CAM's share inside the lung template on every test image, by network and class.

# %%
regions = entry.table("test_gradcam_regions") if entry.has_table("test_gradcam_regions") else None
regions.groupby(["network", "label"])[["lungs", "border", "other"]].mean() if regions is not None else None

# %%
print(entry.path)
