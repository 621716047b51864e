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
# # Task 3: anomaly detection with autoencoders trained on normal lungs only
#
# Convolutional autoencoders learn to reconstruct NORMAL training X-rays only; an image they
# reconstruct badly (or whose code lies far from the normal codes) is flagged as anomalous.
# Each input image is histogram-equalised first. Variants (latent size, denoising, masked
# input, intensity normalisation) and anomaly scores (pixel MSE, SSIM, blurred residual,
# latent k-NN and Mahalanobis distance, encoder-feature Mahalanobis distance) are compared on the patient-grouped
# *validation* split; the threshold is the 95th percentile of the validation normals' scores;
# the chosen pair is tested once. Run it as
#
#     python tasks/anomaly.py --profile gpu --device cuda
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
decode_resolution = None
resolution = None
intensity = None
width = None
depth = None
latent = None
grid = None
noise_std = None
mask_fraction = None
augment = None
train_workers = None
epochs = None
batch_size = None
lr = None
weight_decay = None
patience = None
selection = None
reference_copies = None
knn_k = None
threshold_quantile = None
val_fraction = None
comparators = None

# %%
from pneumo.anomaly import AnomalyConfig, run_anomaly
from pneumo.runner import setup_logging, task_config

setup_logging()
config = task_config(AnomalyConfig, globals())
config

# %% [markdown]
# Train the autoencoders on normal images, score validation and test, choose on validation,
# test the chosen variant and score once (or read the cached result). Every variant x score,
# best validation ROC AUC first (the test columns are shown for reference, never used to choose):

# %%
entry = run_anomaly(config)
entry.table("variants")[["variant", "score", "status", "val_roc_auc", "test_roc_auc"]]

# %% [markdown]
# Test figures of the chosen pair, normal vs all pneumonia and vs each kind, with 95%
# patient-bootstrap confidence intervals; the threshold comes from the validation normals.

# %%
table = entry.table("test_metrics")
table[table["metric"].isin(["roc_auc", "pr_auc", "sensitivity", "specificity"])]

# %%
print(entry.path)
