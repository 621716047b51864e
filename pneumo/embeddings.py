"""Task 2: the embedding space of the Task 1 networks (k-NN classification, t-SNE maps).

The story of :func:`run_embeddings`:

1. read the chosen Task 1a and 1b networks from the cache (computing them when missing);
2. embed every image of train, validation and test with ``model.features(x)``, and build the
   baseline representation: raw pixels, block-averaged down to ``pixel_size``;
3. for each (representation, question) pair, choose k, the distance and the feature scaling
   of a scikit-learn ``KNeighborsClassifier`` on *validation* (balanced accuracy), then score
   the chosen classifier once on *test*, with patient-bootstrap CIs, next to the CNN head;
4. fit an openTSNE map on the *train* embeddings and place validation and test points into it
   with ``transform`` (no refit), and measure how well each space keeps the classes together
   (k-NN class agreement and silhouette, in the embedding and in the map);
5. retrieve, for a few test images per class, their nearest training images ("similar cases");
6. score each chosen k-NN on shifted copies of the validation images (:mod:`pneumo.shift`:
   exposure, sharpness, framing, a black border), the training neighbours left as they are.

Every result is one cache entry keyed by this config, the Task 1 entries it read and the code.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pneumo.config import TaskConfig, param
from pneumo.data import BINARY_CLASSES, CLASSES, XrayDataset
from pneumo.device import configure_threads, pick_device
from pneumo.metrics import binary_metrics, metrics_table, multiclass_metrics
from pneumo.results import Entry, ResultCache
from pneumo.runner import task_spec
from pneumo.shift import SHIFTS, apply_shift, robustness_summary
from pneumo.training import extract_features
from pneumo.upstream import classifier_entries, entry_dataset, first_missing, load_classifier, upstream_keys

log = logging.getLogger(__name__)


#: Representations of an image: the two networks' ``features(x)`` and the raw-pixel baseline.
REPRESENTATIONS = {"net_1a": "Task 1a network", "net_1b": "Task 1b network", "pixels": "raw pixels"}

#: Which question each k-NN answers with which representation: each network on its own
#: question, and raw pixels on both (the baseline that shows what the networks learned).
KNN_PAIRS = (("net_1a", "binary"), ("pixels", "binary"), ("net_1b", "multiclass"), ("pixels", "multiclass"))

#: Candidate neighbour counts (odd, so that two-class votes never tie), capped by ``max_k``.
K_GRID = (1, 3, 5, 7, 9, 11, 15, 21, 31, 41, 51, 75, 101)
DISTANCES = ("euclidean", "cosine")
SCALINGS = ("none", "standard")


@dataclasses.dataclass(frozen=True)
class EmbeddingsConfig(TaskConfig):
    """Task 2: k-NN and t-SNE on the ``features(x)`` embeddings of the Task 1 networks."""

    pixel_size: int = param(32, "side of the raw-pixel baseline (images block-averaged to it)",
                            interval="[1, inf)")
    max_k: int = param(51, "largest k tried (odd values of a fixed grid up to it)", interval="[1, inf)")
    perplexity: float = param(30.0, "t-SNE perplexity of the map fitted on train", interval="(0, inf)")
    tsne_iterations: int = param(500, "t-SNE optimisation iterations after early exaggeration",
                                 interval="[1, inf)")
    agreement_k: int = param(10, "neighbours used for the k-NN class agreement of a space",
                             interval="[1, inf)")
    gallery_per_class: int = param(2, "test images per class in the retrieval gallery", interval="[0, inf)")
    gallery_neighbours: int = param(5, "nearest training images shown per gallery image", interval="[1, inf)")

    PROFILES = {
        "smoke": dict(pixel_size=16, max_k=21, perplexity=15.0, tsne_iterations=250, bootstrap=200,
                      gallery_per_class=2, gallery_neighbours=4),
        "cpu": {},
        "gpu": {},
    }


# -- representations -------------------------------------------------------------------------------
def pixel_features(images: np.ndarray, size: int) -> np.ndarray:
    """Raw-pixel baseline: each image block-averaged to ``size x size``, scaled to [0, 1].

    Parameters
    ----------
    images
        uint8 (N, H, W).
    size
        Output side; area averaging (``adaptive_avg_pool2d``) avoids aliasing.

    Returns
    -------
    numpy.ndarray
        float32 (N, size * size).
    """
    out = []
    for start in range(0, len(images), 512):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + 512])).float().div_(255)
        out.append(F.adaptive_avg_pool2d(x[:, None], size).flatten(1))  # (B, size*size)
    return torch.cat(out).numpy() if out else np.zeros((0, size * size), np.float32)


def network_features(entry: Entry, data: XrayDataset, device: torch.device) -> np.ndarray:
    """``features(x)`` of an entry's chosen network for every image of ``data``: (N, D) float32."""
    model, _ = load_classifier(entry, device)
    return extract_features(model, data.images, device=device)


# -- k-NN ---------------------------------------------------------------------------------------------
class ScaledKNN:
    """A ``KNeighborsClassifier`` behind an optional ``StandardScaler`` (fitted on train).

    Parameters
    ----------
    k
        Number of neighbours (uniform vote).
    distance
        ``"euclidean"`` or ``"cosine"``.
    scaling
        ``"none"`` or ``"standard"`` (zero mean, unit variance per feature, from train).
    """

    def __init__(self, k: int, distance: str = "euclidean", scaling: str = "none"):
        if distance not in DISTANCES or scaling not in SCALINGS:
            raise ValueError(f"distance must be one of {DISTANCES} and scaling one of {SCALINGS}")
        self.k, self.distance, self.scaling = k, distance, scaling

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The features as the neighbour search sees them (scaled when asked)."""
        return self.scaler_.transform(X) if self.scaler_ is not None else np.asarray(X)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "ScaledKNN":
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.preprocessing import StandardScaler

        self.scaler_ = StandardScaler().fit(X) if self.scaling == "standard" else None
        # Brute force: exact, supports cosine, and fast at a few thousand points.
        self.knn_ = KNeighborsClassifier(n_neighbors=self.k, metric=self.distance, algorithm="brute")
        self.knn_.fit(self.transform(X), y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, C) share of the k neighbours in each class."""
        return self.knn_.predict_proba(self.transform(X))

    def kneighbors(self, X: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and train indices of the ``n_neighbors`` nearest training points."""
        return self.knn_.kneighbors(self.transform(X), n_neighbors=n_neighbors)


def _labels(rows: pd.DataFrame, question: str) -> np.ndarray:
    return rows["binary" if question == "binary" else "target"].to_numpy()


def _score(question: str, y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Balanced accuracy, accuracy and ROC AUC of k-NN votes (majority-vote predictions)."""
    if question == "binary":
        m = binary_metrics(y, proba[:, 1], threshold=0.5)
    else:
        m = multiclass_metrics(y, proba, class_names=CLASSES)
    return {"balanced_accuracy": float(m["balanced_accuracy"]), "accuracy": float(m["accuracy"]),
            "roc_auc": float(m["roc_auc"])}


def select_knn(X_train, y_train, X_val, y_val, question: str, k_values) -> pd.DataFrame:
    """Score every (k, distance, scaling) on validation; best first.

    The criterion is validation balanced accuracy (the classes are imbalanced), ties broken
    by validation ROC AUC and then by the smaller k. Test data never enter this function.

    Returns
    -------
    pandas.DataFrame
        Columns ``k``, ``distance``, ``scaling``, ``val_balanced_accuracy``,
        ``val_accuracy``, ``val_roc_auc``, sorted best first.
    """
    rows = []
    for distance in DISTANCES:
        for scaling in SCALINGS:
            for k in k_values:
                if k > len(X_train):
                    continue
                knn = ScaledKNN(k, distance, scaling).fit(X_train, y_train)
                scores = _score(question, y_val, knn.predict_proba(X_val))
                rows.append({"k": k, "distance": distance, "scaling": scaling,
                             **{f"val_{name}": value for name, value in scores.items()}})
    grid = pd.DataFrame(rows)
    order = grid.assign(neg_k=-grid["k"]).sort_values(
        ["val_balanced_accuracy", "val_roc_auc", "neg_k"], ascending=False, kind="stable")
    return order.drop(columns="neg_k").reset_index(drop=True)


# -- maps and their quality --------------------------------------------------------------------------
def tsne_map(X_train: np.ndarray, X_new: np.ndarray, *, perplexity: float, n_iter: int,
             random_state: int, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """Fit an openTSNE map on train points and place new points into it without refitting.

    PCA initialisation keeps the global layout reproducible; ``transform`` optimises only
    the new points against the fixed training map (openTSNE's defaults for adding points).

    Returns
    -------
    train_map, new_map : numpy.ndarray
        (n_train, 2) and (n_new, 2) float32 coordinates.
    """
    from openTSNE import TSNE

    perplexity = float(min(perplexity, (len(X_train) - 1) / 3))  # openTSNE needs 3 * perplexity < n
    tsne = TSNE(perplexity=perplexity, n_iter=n_iter, initialization="pca", metric=metric,
                random_state=random_state, n_jobs=max(1, torch.get_num_threads()))
    embedding = tsne.fit(np.asarray(X_train, dtype=np.float64))
    placed = embedding.transform(np.asarray(X_new, dtype=np.float64)) if len(X_new) else np.zeros((0, 2))
    return np.asarray(embedding, dtype=np.float32), np.asarray(placed, dtype=np.float32)


def class_agreement(X_ref: np.ndarray, y_ref: np.ndarray, X_query: np.ndarray, y_query: np.ndarray,
                    k: int, metric: str = "euclidean") -> float:
    """Mean share of each query point's ``k`` nearest reference points that share its class."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=min(k, len(X_ref)), metric=metric, algorithm="brute").fit(X_ref)
    _, index = nn.kneighbors(X_query)  # (n_query, k)
    return float((y_ref[index] == y_query[:, None]).mean())


def silhouette(X: np.ndarray, y: np.ndarray, metric: str = "euclidean", *, max_points: int = 2000,
               random_state: int = 0) -> float:
    """Silhouette of the class labels (on a seeded sample of at most ``max_points``)."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(y)) < 2:
        return float("nan")
    size = min(max_points, len(X))
    return float(silhouette_score(X, y, metric=metric, sample_size=size, random_state=random_state))


# -- the whole task ------------------------------------------------------------------------------------
def run_embeddings(config: EmbeddingsConfig, *, compute: bool = True) -> Entry:
    """Run Task 2 end to end (or return its cached entry).

    Parameters
    ----------
    config
        The task's parameters; ``config.profile`` also picks the Task 1 networks.
    compute
        False only looks the entry up (it may not exist; nor may the Task 1 entries).

    Returns
    -------
    Entry
        ``metrics.json`` holds the headline test figures of every chosen k-NN.
    """
    configure_threads()
    cache = ResultCache(config.cache, writable=compute)
    networks = classifier_entries(config.profile, data=config.data, cache=config.cache,
                                  device=config.device, num_workers=config.num_workers, compute=compute)
    missing = first_missing(networks)
    if missing is not None:
        return missing  # upstream not computed yet (compute=False): nothing to look up
    data_1a = entry_dataset(networks["binary"], config.num_workers, data=config.data, cache=config.cache)
    entry = cache.lookup("embeddings", {**config.key_dict(), **upstream_keys(networks)}, data_1a.fingerprint,
                         task_spec("embeddings").code)
    if (entry.exists and not config.force) or not compute:
        return entry
    key = entry.key

    device = pick_device(config.device)
    with cache.write("embeddings", key, reuse=not config.force) as out:
        if out is None:  # computed meanwhile by another process
            return entry
        with out.phase("features"):
            datasets = _datasets(config, networks, data_1a)
            features = _representations(config, networks, datasets, device)
        table = data_1a.table
        split = table["split"].to_numpy()
        masks = {s: split == s for s in ("train", "val", "test")}

        with out.phase("knn"):
            chosen, grid_table, knn_table, predictions = _choose_and_test_knns(config, features, table, masks)

        with out.phase("tsne"):
            maps, quality_table = _maps_and_quality(config, features, chosen, table, masks)

        with out.phase("gallery"):
            gallery = _gallery(config, chosen[("net_1b", "multiclass")], features["net_1b"], table, masks)

        with out.phase("shift"):
            shifts = _knns_under_shift(config, networks, datasets, chosen, masks["val"], device)

        out.json("params", {**config.to_dict(), **upstream_keys(networks)})
        out.json("metrics", _headline(knn_table, shifts, quality_table, data_1a))
        out.table("knn_grid", grid_table)
        out.table("knn_test_metrics", knn_table)
        out.table("head_test_metrics", _head_metrics(networks))
        out.table("knn_predictions", predictions)
        out.table("space_quality", quality_table)
        out.table("knn_val_shifts", shifts)
        out.table("gallery", gallery)
        out.table("images", table[["relpath", "split", "label", "patient"]].reset_index(drop=True))
        out.arrays(**{f"features_{name}": value.astype(np.float16) for name, value in features.items()},
                   **{f"tsne_{name}": value for name, value in maps.items()})
    log.info("embeddings: result at %s", entry.path)
    return entry


def _datasets(config: EmbeddingsConfig, networks: dict[str, Entry], data_1a: XrayDataset) -> dict[str, XrayDataset]:
    """Each network's data set (its own resolution), row-aligned: ``{"net_1a", "net_1b"}``."""
    data_1b = entry_dataset(networks["multiclass"], config.num_workers, data=config.data,
                            cache=config.cache)
    # Row i of every representation must be the same image.
    if not data_1b.table["relpath"].equals(data_1a.table["relpath"]):
        raise RuntimeError("the Task 1a and 1b data sets list different images")
    return {"net_1a": data_1a, "net_1b": data_1b}


def _representations(config: EmbeddingsConfig, networks: dict[str, Entry], datasets: dict[str, XrayDataset],
                     device: torch.device) -> dict[str, np.ndarray]:
    """Every image's representations, one (N, D) float32 array each: both networks' and raw pixels."""
    return {
        "net_1a": network_features(networks["binary"], datasets["net_1a"], device),
        "net_1b": network_features(networks["multiclass"], datasets["net_1b"], device),
        "pixels": pixel_features(datasets["net_1a"].images, config.pixel_size),
    }


def _knns_under_shift(config: EmbeddingsConfig, networks: dict[str, Entry], datasets: dict[str, XrayDataset],
                      chosen: dict, val_mask: np.ndarray, device: torch.device) -> pd.DataFrame:
    """Each chosen k-NN on every shifted copy of the validation images (:data:`pneumo.shift.SHIFTS`).

    Only the query images are shifted: the training neighbours stay as they were, as a film
    from another machine would meet them. One row per (representation, question, shift):
    ``group``, ``balanced_accuracy``, ``accuracy``, ``roc_auc``.
    """
    images = {name: data.images[val_mask] for name, data in datasets.items()}  # uint8 (N_val, H, W)
    table = datasets["net_1a"].table
    models = {"net_1a": load_classifier(networks["binary"], device)[0],
              "net_1b": load_classifier(networks["multiclass"], device)[0]}
    rows = []
    for shift in SHIFTS:
        shifted = {name: apply_shift(x, shift, seed=config.seed) for name, x in images.items()}
        features = {name: extract_features(model, shifted[name], device=device) for name, model in models.items()}
        features["pixels"] = pixel_features(shifted["net_1a"], config.pixel_size)
        for (representation, question), knn in chosen.items():
            y = _labels(table, question)[val_mask]
            rows.append({"representation": representation, "question": question, "shift": shift.name,
                         "group": shift.group, **_score(question, y, knn.predict_proba(features[representation]))})
    return pd.DataFrame(rows)


def _choose_and_test_knns(
    config: EmbeddingsConfig, features: dict[str, np.ndarray], table: pd.DataFrame, masks: dict[str, np.ndarray]
) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Choose each pair's k-NN on validation, test it once: chosen, grid, test metrics, predictions."""
    k_values = [k for k in K_GRID if k <= config.max_k]
    grids, chosen, results = [], {}, []
    for representation, question in KNN_PAIRS:
        X = features[representation]
        y = _labels(table, question)
        grid = select_knn(X[masks["train"]], y[masks["train"]], X[masks["val"]], y[masks["val"]],
                          question, k_values)
        best = grid.iloc[0]
        knn = ScaledKNN(int(best["k"]), best["distance"], best["scaling"]).fit(
            X[masks["train"]], y[masks["train"]])
        chosen[(representation, question)] = knn
        grids.append(grid.assign(representation=representation, question=question))
        results.append(_test_knn(config, knn, X, y, table, masks["test"], representation, question))
    grid_table = pd.concat(grids, ignore_index=True)
    knn_table = pd.concat([r["metrics"] for r in results], ignore_index=True)
    predictions = pd.concat([r["predictions"] for r in results], ignore_index=True)
    return chosen, grid_table, knn_table, predictions


def _maps_and_quality(
    config: EmbeddingsConfig, features: dict[str, np.ndarray], chosen: dict, table: pd.DataFrame,
    masks: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Each representation's t-SNE map ((N, 2), fitted on train) and how well each space keeps the classes."""
    maps, quality = {}, []
    for representation in REPRESENTATIONS:
        # Each map shows the space its 3-class k-NN searched: that scaling and distance.
        question = "multiclass" if representation != "net_1a" else "binary"
        knn = chosen[(representation, question)]
        Z = knn.transform(features[representation]).astype(np.float32)
        train_map, new_map = tsne_map(
            Z[masks["train"]], Z[~masks["train"]], perplexity=config.perplexity,
            n_iter=config.tsne_iterations, random_state=config.seed, metric=knn.distance)
        coords = np.zeros((len(Z), 2), np.float32)
        coords[masks["train"]], coords[~masks["train"]] = train_map, new_map
        maps[representation] = coords
        quality.append(_space_quality(config, Z, coords, table, masks, representation, knn.distance))
    return maps, pd.DataFrame(quality)


def _test_knn(config, knn: ScaledKNN, X, y, table, test_mask, representation: str, question: str) -> dict:
    """Score a chosen k-NN once on test: metric table with CIs and per-image predictions."""
    proba = knn.predict_proba(X[test_mask])
    rows = table[test_mask]
    groups = rows["patient"].to_numpy()
    if question == "binary":
        metric_fn, scores, classes = partial(binary_metrics, threshold=0.5), proba[:, 1], BINARY_CLASSES
    else:
        metric_fn, scores, classes = partial(multiclass_metrics, class_names=CLASSES), proba, CLASSES
    metrics = metrics_table(metric_fn, y[test_mask], scores, groups, n_boot=config.bootstrap,
                            seed=config.seed).reset_index()
    metrics.insert(0, "question", question)
    metrics.insert(0, "representation", representation)
    metrics["k"], metrics["distance"], metrics["scaling"] = knn.k, knn.distance, knn.scaling
    predictions = rows[["relpath", "patient", "label"]].reset_index(drop=True)
    predictions.insert(0, "question", question)
    predictions.insert(0, "representation", representation)
    predictions["target"] = y[test_mask]
    predictions["predicted"] = proba.argmax(1)
    for c, name in enumerate(classes):
        predictions[f"p_{name}"] = proba[:, c]
    return {"metrics": metrics, "predictions": predictions}


def _space_quality(config, Z, coords, table, masks, representation: str, distance: str) -> dict[str, Any]:
    """How well a space and its map keep the three classes apart.

    k-NN class agreement: for each test image, the share of its ``agreement_k`` nearest
    training images with the same label (normal / bacterial / viral), in the embedding
    (the k-NN's scaling and distance) and in the 2-D map. Silhouette: of the training
    images' three classes, in both spaces.
    """
    y = table["target"].to_numpy()
    train, test = masks["train"], masks["test"]
    k = config.agreement_k
    return {
        "representation": representation,
        "agreement_embedding": class_agreement(Z[train], y[train], Z[test], y[test], k, distance),
        "agreement_map": class_agreement(coords[train], y[train], coords[test], y[test], k),
        "silhouette_embedding": silhouette(Z[train], y[train], distance, random_state=config.seed),
        "silhouette_map": silhouette(coords[train], y[train], random_state=config.seed),
        "chance_agreement": _chance_agreement(y[train], y[test]),
    }


def _chance_agreement(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Expected agreement of neighbours drawn at random from train: sum_c P_test(c) P_train(c)."""
    p_train = np.bincount(y_train, minlength=len(CLASSES)) / len(y_train)
    p_test = np.bincount(y_test, minlength=len(CLASSES)) / len(y_test)
    return float(p_train @ p_test)


def _gallery(config, knn: ScaledKNN, X: np.ndarray, table: pd.DataFrame, masks) -> pd.DataFrame:
    """Nearest training images of a seeded draw of test images per class (rank 0 = the query)."""
    rng = np.random.default_rng(config.seed)
    train_rows = table[masks["train"]].reset_index(drop=True)
    test_rows = table[masks["test"]].reset_index(drop=True)
    X_test = X[masks["test"]]
    rows = []
    for label in CLASSES:
        candidates = np.flatnonzero(test_rows["label"].to_numpy() == label)
        picks = rng.choice(candidates, size=min(config.gallery_per_class, len(candidates)), replace=False)
        for query, i in enumerate(sorted(picks)):
            distances, index = knn.kneighbors(X_test[i:i + 1], config.gallery_neighbours)
            query_id = f"{label}-{query + 1}"
            rows.append({"query": query_id, "rank": 0, "relpath": test_rows.at[i, "relpath"],
                         "label": label, "distance": 0.0})
            for rank, (d, j) in enumerate(zip(distances[0], index[0]), start=1):
                rows.append({"query": query_id, "rank": rank, "relpath": train_rows.at[j, "relpath"],
                             "label": train_rows.at[j, "label"], "distance": float(d)})
    return pd.DataFrame(rows)


def _head_metrics(networks: dict[str, Entry]) -> pd.DataFrame:
    """The Task 1 networks' own test metrics (their classifier heads), for the side-by-side table."""
    frames = []
    for name, question in (("binary", "binary"), ("multiclass", "multiclass")):
        frame = networks[name].table("network_test_metrics")  # the network whose embedding this is
        frame.insert(0, "question", question)
        frame.insert(0, "representation", "head_1a" if name == "binary" else "head_1b")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _headline(knn_table: pd.DataFrame, shifts: pd.DataFrame, quality: pd.DataFrame, data: XrayDataset) -> dict:
    out: dict[str, Any] = {"data_synthetic": data.is_synthetic}
    for (representation, question), rows in knn_table.groupby(["representation", "question"], sort=False):
        values = rows.set_index("metric")["value"]
        prefix = f"{representation}_{question}"
        out[f"{prefix}_k"] = int(rows["k"].iloc[0])
        for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
            out[f"{prefix}_test_{metric}"] = float(values[metric])
        pair = shifts[(shifts["representation"] == representation) & (shifts["question"] == question)]
        for metric in ("balanced_accuracy", "roc_auc"):
            summary = robustness_summary(pair, metric)
            out[f"{prefix}_val_shift_{metric}_mean"] = summary["mean"]
            out[f"{prefix}_val_shift_{metric}_worst"] = summary["worst"]
    for row in quality.to_dict("records"):
        out[f"{row['representation']}_agreement_map"] = row["agreement_map"]
    return out
