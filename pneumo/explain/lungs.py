"""A simple lung-field estimate: one fixed template per data set, from the mean training image.

Why a template and not a per-image segmentation: an intensity-based segmentation of each image
finds the dark (aerated) lung, so it leaves out exactly the opacities (consolidation,
interstitial shadows) that a pneumonia classifier should look at, and it would bias the
"inside the lungs" share downwards for sick images. A fixed template treats every image the
same. The Kaggle images are roughly centred frontal radiographs (the decode step crops the
centre square), so the mean training image shows two dark lung fields on a brighter
mediastinum, with dark film edges on the left and right.

The recipe (:class:`LungTemplate`):

1. mean of the training images (uint8, model resolution), lightly smoothed (Gaussian,
   ``sigma = side * smooth``);
2. *local darkness*: the smoothed mean minus a broad Gaussian blur of it
   (``sigma = side * context``), so that the lungs stand out against the bright mediastinum
   and chest wall while the overall fall-off towards the film edges is removed;
3. a frame of width ``side * margin`` along every edge is excluded (film edges, markers,
   collimation); inside it, the locally darkest ``quantile`` of the pixels are candidate lung;
4. the largest connected component in each half (left, right) is kept, closed (small
   notches smoothed) and its holes filled.

The regions used in the report: ``lungs`` (the template), ``border`` (the excluded frame:
film edges, text markers, collimation), ``other`` (the rest: mediastinum, shoulders,
diaphragm, abdomen).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["LungTemplate", "region_shares"]


class LungTemplate:
    """A fixed lung-field mask estimated from the mean training image.

    Parameters
    ----------
    quantile
        Share of the inner (non-frame) pixels of the smoothed mean image taken as candidate
        lung (the darkest ones).
    margin
        Width of the excluded frame, as a fraction of the image side.
    smooth
        Gaussian smoothing of the mean image, as a fraction of the side.
    context
        Width of the neighbourhood the local darkness is measured against (fraction of the side).

    Attributes
    ----------
    mask_ : numpy.ndarray
        bool (H, W), both lung fields.
    border_ : numpy.ndarray
        bool (H, W), the frame along the edges.
    mean_image_ : numpy.ndarray
        float (H, W), the mean training image in [0, 255].
    """

    def __init__(self, quantile: float = 0.35, margin: float = 0.08, smooth: float = 1 / 64,
                 context: float = 0.1):
        if not 0 < quantile < 1 or not 0 <= margin < 0.5:
            raise ValueError(f"need 0 < quantile < 1 and 0 <= margin < 0.5, got {quantile=}, {margin=}")
        self.quantile, self.margin, self.smooth, self.context = quantile, margin, smooth, context

    def fit(self, images: np.ndarray) -> "LungTemplate":
        """Estimate the template from uint8 images (N, H, W) (training images)."""
        images = np.asarray(images)
        if images.ndim != 3:
            raise ValueError(f"expected images (N, H, W), got {images.shape}")
        H, W = images.shape[1:]
        mean = np.zeros((H, W), dtype=np.float64)
        for start in range(0, len(images), 512):  # chunked: no float copy of the whole set
            mean += images[start:start + 512].astype(np.float64).sum(0)
        mean /= max(len(images), 1)
        self.mean_image_ = mean
        smooth = ndimage.gaussian_filter(mean, sigma=max(H, W) * self.smooth)
        darkness = smooth - ndimage.gaussian_filter(mean, sigma=max(H, W) * self.context)  # < 0: darker

        m_h, m_w = int(round(H * self.margin)), int(round(W * self.margin))
        border = np.ones((H, W), dtype=bool)
        border[m_h:H - m_h, m_w:W - m_w] = False
        level = np.quantile(darkness[~border], self.quantile)
        candidate = (darkness <= level) & ~border

        mask = np.zeros((H, W), dtype=bool)
        for half in (slice(0, W // 2), slice(W // 2, W)):
            part = np.zeros_like(candidate)
            part[:, half] = candidate[:, half]
            labels, n = ndimage.label(part)
            if n == 0:
                continue
            sizes = ndimage.sum(part, labels, index=range(1, n + 1))
            mask |= labels == (1 + int(np.argmax(sizes)))
        radius = max(1, int(round(max(H, W) / 32)))
        structure = ndimage.iterate_structure(ndimage.generate_binary_structure(2, 1), radius)
        mask = ndimage.binary_closing(mask, structure=structure) & ~border
        self.mask_ = ndimage.binary_fill_holes(mask)
        self.border_ = border
        return self

    def regions(self) -> dict[str, np.ndarray]:
        """``{"lungs", "border", "other"}``: disjoint bool masks (H, W) covering the image."""
        other = ~(self.mask_ | self.border_)
        return {"lungs": self.mask_, "border": self.border_, "other": other}

    def iou(self, masks: np.ndarray) -> np.ndarray:
        """Intersection over union of the template with true masks (N, H, W) (phantoms)."""
        masks = np.asarray(masks, dtype=bool).reshape(-1, *self.mask_.shape)
        inter = (masks & self.mask_).sum((1, 2))
        union = (masks | self.mask_).sum((1, 2))
        return inter / np.maximum(union, 1)


def region_shares(maps: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Share of each map's attribution mass that falls in each region.

    Parameters
    ----------
    maps
        (N, H, W) attributions. Signed maps count their positive part (evidence *for* the
        explained class); Grad-CAM maps are non-negative already.
    regions
        Disjoint bool masks (H, W), e.g. :meth:`LungTemplate.regions`.

    Returns
    -------
    dict
        ``{region: (N,) shares}``; the shares of disjoint covering regions sum to 1 (NaN for a
        map without positive mass).
    """
    positive = np.clip(np.asarray(maps, dtype=np.float64), 0, None)
    total = positive.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {name: np.where(total > 0, (positive * mask).sum((1, 2)) / total, np.nan)
                for name, mask in regions.items()}
