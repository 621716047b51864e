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
# # Task 2: what did the networks learn? Their embedding space
#
# The `features(x)` vectors of the Task 1a and 1b networks (read from the results cache, or
# trained first) feed a k-nearest-neighbour classifier, whose k, distance and scaling are
# chosen on *validation*, and an openTSNE map fitted on *train* into which validation and test
# images are placed without refitting. Raw downsampled pixels are the baseline. Run it as
#
#     python tasks/embeddings.py --profile gpu --device cuda
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
pixel_size = None
max_k = None
perplexity = None
tsne_iterations = None
agreement_k = None
gallery_per_class = None
gallery_neighbours = None

# %%
from pneumo.embeddings import EmbeddingsConfig, run_embeddings
from pneumo.runner import setup_logging, task_config

setup_logging()
config = task_config(EmbeddingsConfig, globals())
config

# %% [markdown]
# Embed every image, choose each k-NN on validation, score it once on test, draw the maps.

# %%
entry = run_embeddings(config)
entry.table("knn_test_metrics").query("metric in ['accuracy', 'balanced_accuracy', 'roc_auc']")

# %% [markdown]
# How well each space, and its t-SNE map, keeps the three classes together.

# %%
entry.table("space_quality")

# %%
print(entry.path)
