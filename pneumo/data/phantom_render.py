"""Rendering one synthetic "phantom" chest X-ray (:func:`render_phantom`) from simple geometry.

The phantoms are frontal (PA) chest radiographs in radiograph convention (bright =
attenuating: bone, soft tissue; dark = air)::

    dark background | soft-tissue torso, neck and abdomen | two dark lung fields
    curved rib bands | clavicles | spine and mediastinum | heart shadow, aortic knob, hila
    faint vascular markings radiating from the hila

with per-patient anatomy (lung size, heart size, inspiration; :func:`draw_anatomy`) and
per-image pose (shift, scale, rotation), exposure, contrast, gamma, detector blur and noise,
and a lead side marker ``L`` or ``R`` in a random corner of *every* class (so it is no
shortcut).

Classes differ by pathology only:

* **bacterial**: lobar consolidation, one fairly well-bounded dense region with an irregular
  margin in one lung, sometimes with air bronchograms (dark branching tubes inside it);
* **viral**: diffuse bilateral interstitial pattern, reticular lines and patchy haze in both
  lungs, strongest around the hila (perihilar) and in the lower zones;
* **normal**: none.

Severity is drawn per image from subtle to obvious, so a small CNN has to learn the patterns;
it should not reach 100 % after one epoch.

Any change to the pixels drawn here needs a new
:data:`~pneumo.data.phantoms.PHANTOM_VERSION`, so that phantom folders written before are
generated again.  Only numpy and Pillow are used (Gaussian filters via FFT), to keep the
data layer light.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pneumo.data.labels import CLASSES

__all__ = ["draw_anatomy", "render_phantom"]


# ---------------------------------------------------------------------------------------
# Small numpy helpers.  All fields are float32 (S, S) unless noted.
# ---------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _gaussian_filter(field: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur by FFT with reflect padding (no scipy needed); sigma in pixels."""
    if sigma_px <= 0:
        return field
    pad = int(min(field.shape[0] // 2, math.ceil(3 * sigma_px)))
    padded = np.pad(field, pad, mode="reflect") if pad else field
    h, w = padded.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    transfer = np.exp(-2.0 * (math.pi * sigma_px) ** 2 * (fx * fx + fy * fy))
    out = np.fft.irfft2(np.fft.rfft2(padded) * transfer, s=(h, w))
    return out[pad : pad + field.shape[0], pad : pad + field.shape[1]].astype(np.float32)


def _bandpass_noise(rng: np.random.Generator, size: int, lo: float, hi: float) -> np.ndarray:
    """Zero-mean, unit-std periodic noise with spatial frequencies in ``[lo, hi]`` cycles/image.

    Its zero crossings form a random network of lines, used as the reticular texture.
    """
    white = rng.standard_normal((size, size)).astype(np.float32)
    fy = np.fft.fftfreq(size)[:, None] * size
    fx = np.fft.rfftfreq(size)[None, :] * size
    radius = np.sqrt(fx * fx + fy * fy)
    band = _smoothstep((radius - lo) / max(lo, 1.0)) * (1.0 - _smoothstep((radius - hi) / hi))
    out = np.fft.irfft2(np.fft.rfft2(white) * band, s=(size, size)).astype(np.float32)
    return out / (out.std() + 1e-8)


def _sample_periodic(texture: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear sample of a periodic 2-D ``texture`` (Ha, Hb) at float coords ``a``, ``b``."""
    ha, hb = texture.shape
    flat = texture.ravel()
    a0, b0 = np.floor(a), np.floor(b)
    fa, fb = (a - a0).astype(np.float32), (b - b0).astype(np.float32)
    # Wrap into range with a float modulo (cheaper than int64 %), then flat indices.
    ia0 = np.mod(a0, ha).astype(np.int32)
    ib0 = np.mod(b0, hb).astype(np.int32)
    ia1 = np.where(ia0 == ha - 1, 0, ia0 + 1) * hb
    ib1 = np.where(ib0 == hb - 1, 0, ib0 + 1)
    ia0 *= hb
    top = flat.take(ia0 + ib0) * (1 - fb) + flat.take(ia0 + ib1) * fb
    bottom = flat.take(ia1 + ib0) * (1 - fb) + flat.take(ia1 + ib1) * fb
    return top * (1 - fa) + bottom * fa


# ---------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------
def draw_anatomy(rng: np.random.Generator) -> dict[str, float]:
    """Draw one patient's anatomy (kept across that patient's images).

    Returns
    -------
    dict
        Scalar shape parameters in body coordinates (the chest spans about ``[-1, 1]``).
    """
    return {
        "lung_half_width": float(rng.uniform(0.20, 0.26)),
        "lung_center_x": float(rng.uniform(0.33, 0.39)),
        "lung_top": float(rng.uniform(-0.70, -0.60)),
        "lung_bottom": float(rng.uniform(0.38, 0.56)),  # inspiration depth
        "left_dome_drop": float(rng.uniform(0.00, 0.06)),  # left hemidiaphragm lower
        "heart_rx": float(rng.uniform(0.24, 0.33)),
        "heart_ry": float(rng.uniform(0.17, 0.23)),
        "heart_cx": float(rng.uniform(0.05, 0.12)),
        "rib_spacing": float(rng.uniform(0.105, 0.125)),
        "rib_phase": float(rng.uniform(0.0, 1.0)),
        "torso_width": float(rng.uniform(0.86, 0.98)),
        "tissue": float(rng.uniform(0.50, 0.60)),
    }


def _pose_grid(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Body coordinates ``(u, v)`` of every pixel under a random pose, each (S, S) float32.

    Image coordinates ``x, y`` run over ``[-1, 1]`` (``y`` down); the body is shifted by up to
    6 %, scaled by 0.88-1.08 (x and y slightly differently) and rotated by up to 5 degrees.
    """
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")
    tx, ty = rng.uniform(-0.06, 0.06, size=2)
    scale = rng.uniform(0.88, 1.08)
    aspect = rng.uniform(0.95, 1.05)
    angle = math.radians(rng.uniform(-5.0, 5.0))
    c, s = math.cos(angle), math.sin(angle)
    xs, ys = x - tx, y - ty
    u = (c * xs + s * ys) / (scale * aspect)
    v = (-s * xs + c * ys) / (scale / aspect)
    return u.astype(np.float32), v.astype(np.float32)


def _lung_fields(u: np.ndarray, v: np.ndarray, a: dict, edge: float) -> list[np.ndarray]:
    """Soft masks (0..1) of the image-left and image-right lung, each (S, S)."""
    masks = []
    cy = 0.5 * (a["lung_top"] + a["lung_bottom"])
    half_h = 0.5 * (a["lung_bottom"] - a["lung_top"])
    for side in (-1.0, 1.0):
        cx = side * a["lung_center_x"]
        # The patient's right lung (image left) is a little wider, the left one is narrowed
        # medially by the heart.
        hw = a["lung_half_width"] * (1.04 if side < 0 else 0.96)
        t = (v - cy) / half_h  # -1 at apex, +1 at base
        # Narrower towards the apex: a rounded cone at the top, full width in the lower half.
        taper = 1.0 - 0.45 * np.clip(-t, 0.0, 1.0) ** 2
        du = (u - cx) / (hw * taper + 1e-3)
        r = np.abs(du) ** 2.4 + np.abs(np.clip(t, -2.0, 0.0)) ** 2.0
        inside = _sigmoid((1.0 - r) / (edge * 6))
        # Diaphragm dome: highest mid-lung, lower laterally (costophrenic angle) and medially.
        drop = a["left_dome_drop"] if side > 0 else 0.0
        dome = a["lung_bottom"] + drop - 0.16 * (1.0 - np.clip(du, -1.5, 1.5) ** 2)
        below = _sigmoid((dome - v) / edge)
        masks.append((inside * below).astype(np.float32))
    return masks


def _ribs(u: np.ndarray, v: np.ndarray, a: dict) -> np.ndarray:
    """Rib shadows (0..1): posterior ribs arching laterally, fainter anterior ribs."""
    xr = np.abs(u)
    spacing = a["rib_spacing"]
    # Posterior ribs rise from the spine, peak around 45 % of the half-width, then curve down
    # along the lateral chest wall.
    curve = 0.10 * xr + 1.2 * np.clip(xr - 0.42, 0, None) ** 2
    phase = (v - curve) / spacing + a["rib_phase"]
    band = np.clip((np.cos(2 * math.pi * phase) - 0.35) / 0.65, 0.0, 1.0) ** 0.7
    # Anterior ribs slope down towards the midline; drawn fainter.
    phase_a = (v + 0.45 * xr) / (spacing * 1.15) + 0.3
    band_a = np.clip((np.cos(2 * math.pi * phase_a) - 0.5) / 0.5, 0.0, 1.0)
    cage = _sigmoid((0.70 - xr) / 0.02) * _sigmoid((v + 0.72) / 0.03) * _sigmoid((0.62 - v) / 0.05)
    return ((band + 0.35 * band_a) * cage).astype(np.float32)


def _clavicles(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Two clavicles (0..1), S-shaped bands from the sternum towards the shoulders."""
    xr = np.abs(u)
    centre = -0.63 - 0.12 * xr + 0.22 * xr**2
    band = np.exp(-(((v - centre) / 0.028) ** 2))
    extent = _sigmoid((xr - 0.06) / 0.015) * _sigmoid((0.66 - xr) / 0.02)
    return (band * extent).astype(np.float32)


def _spine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Spine (0..1): a vertical band with vertebral body modulation."""
    band = _sigmoid((0.065 - np.abs(u)) / 0.01)
    vertebrae = 0.75 + 0.25 * np.cos(2 * math.pi * v / 0.11)
    return (band * vertebrae).astype(np.float32)


def _ellipse(u, v, cx, cy, rx, ry, edge, angle=0.0) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    du, dv = u - cx, v - cy
    p, q = (c * du + s * dv) / rx, (-s * du + c * dv) / ry
    return _sigmoid((1.0 - np.sqrt(p * p + q * q)) / edge).astype(np.float32)


def _draw_marker(size: int, rng: np.random.Generator) -> np.ndarray:
    """A lead side marker 'L' or 'R' in a random corner: (S, S) float32 0..1 coverage."""
    letter = "L" if rng.random() < 0.5 else "R"
    px = max(8, int(round(size * rng.uniform(0.06, 0.09))))
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=px)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        font = ImageFont.load_default()
    margin = int(size * 0.03)
    span = int(size * 0.12)
    left = bool(rng.random() < 0.5)
    top = bool(rng.random() < 0.5)
    dx, dy = int(rng.integers(0, span)), int(rng.integers(0, span))
    x = margin + dx if left else size - margin - px - dx
    y = margin + dy if top else size - margin - px - dy
    draw.text((x, y), letter, fill=255, font=font)
    return np.asarray(canvas, dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------
# Pathology
# ---------------------------------------------------------------------------------------
def _consolidation(u, v, lungs, a, rng, size) -> np.ndarray:
    """Lobar consolidation density (0..1) in one lung, with optional air bronchograms."""
    severity = float(rng.beta(1.6, 1.2))  # mostly moderate, some subtle, some obvious
    side = int(rng.integers(0, 2))
    lung = lungs[side]
    sign = -1.0 if side == 0 else 1.0
    # Centre inside the chosen lung: lateral-ish, anywhere from upper to lower zone.
    cx = sign * (a["lung_center_x"] + rng.uniform(-0.08, 0.08))
    cy = rng.uniform(a["lung_top"] + 0.3, a["lung_bottom"] - 0.12)
    radius = 0.12 + 0.14 * severity + rng.uniform(-0.02, 0.03)
    du, dv = (u - cx) / (radius * rng.uniform(0.8, 1.25)), (v - cy) / radius
    dist = np.sqrt(du * du + dv * dv)
    theta = np.arctan2(dv, du)
    # Irregular but well-defined margin: radius modulated by a few angular harmonics.
    wobble = np.zeros_like(theta)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.03, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    d = dist / (1.0 + wobble)
    density = _sigmoid((1.0 - d) / 0.08)
    # Inner mottling: consolidation is not perfectly homogeneous.
    mottle = _gaussian_filter(rng.standard_normal(u.shape).astype(np.float32), size / 64)
    mottle /= mottle.std() + 1e-8
    density = density * (0.85 + 0.15 * np.clip(mottle, -2, 2) / 2)
    if rng.random() < 0.5:
        # Air bronchograms: air-filled bronchi stand out dark against the consolidated lung.
        tubes = np.zeros_like(u)
        hilum = np.array([sign * 0.16, -0.05])
        for _ in range(int(rng.integers(2, 5))):
            angle = math.atan2(cy - hilum[1], cx - hilum[0]) + rng.uniform(-0.5, 0.5)
            direction = np.array([math.cos(angle), math.sin(angle)])
            rel_u, rel_v = u - hilum[0], v - hilum[1]
            along = rel_u * direction[0] + rel_v * direction[1]
            across = -rel_u * direction[1] + rel_v * direction[0]
            width = 0.010 + 0.006 * rng.random()
            tubes = np.maximum(tubes, np.exp(-((across / width) ** 2)) * (along > 0))
        density = density * (1.0 - 0.6 * tubes)
    return (density * lung * (0.45 + 0.55 * severity)).astype(np.float32)


def _interstitial(u, v, lungs, a, rng, size) -> np.ndarray:
    """Diffuse bilateral interstitial density (0..1): reticular lines, perihilar haze."""
    severity = float(rng.beta(1.6, 1.2))
    # Reticular network: the zero crossings of band-passed noise form a mesh of thin lines.
    mesh = _bandpass_noise(rng, size, 0.025 * size, 0.055 * size)
    lines = np.exp(-((mesh / 0.35) ** 2))
    # Patchy ground-glass haze at a lower spatial frequency.
    patches = np.clip(_bandpass_noise(rng, size, 2.0, 0.02 * size + 2.0), -0.3, 2.5) + 0.3
    both = lungs[0] + lungs[1]
    # Perihilar and lower-zone predominance, in both lungs.
    r_hila = np.minimum(np.hypot(u + 0.17, v + 0.02), np.hypot(u - 0.17, v + 0.02))
    weight = 0.55 * np.exp(-r_hila / 0.28) + 0.45 * _smoothstep((v + 0.1) / 0.6)
    density = (0.5 * lines + 0.5 * patches / 2.8) * weight * both
    return (density * (0.6 + 0.8 * severity)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------
#: Edge width of the lung fields' soft masks, in body coordinates.
_LUNG_EDGE = 0.012

#: Attenuation a lesion of density 1 adds where the lung is fully visible.
_LESION_WEIGHT = {"bacterial": 0.5, "viral": 0.6}


def render_phantom(
    label: str,
    rng: np.random.Generator,
    size: int = 256,
    *,
    anatomy: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Render one synthetic frontal chest X-ray.

    Parameters
    ----------
    label
        ``"normal"``, ``"bacterial"`` or ``"viral"``.
    rng
        Source of all randomness (pose, exposure, noise, pathology); the same generator state
        gives the same image.
    size
        Side of the square image in pixels.
    anatomy
        Patient anatomy from :func:`draw_anatomy`; drawn from ``rng`` when None.  Passing one
        dict for several images makes them look like one patient.

    Returns
    -------
    dict
        ``image``: uint8 ``(size, size)`` radiograph (bright = dense);
        ``lesion``: bool ``(size, size)``, the consolidation (bacterial) or the region of
        clearly increased interstitial density (viral), all False for normal;
        ``lungs``: bool ``(size, size)``, both lung fields;
        ``label``: the label; ``severity``: float, mean added lesion density (0 for normal).

    Raises
    ------
    ValueError
        For an unknown label.
    """
    if label not in CLASSES:
        raise ValueError(f"unknown label {label!r}; expected one of {CLASSES}")
    # Random draws, in this order: anatomy, pose, vessel texture, lesion, detector.  Another
    # order gives other images (and needs a new PHANTOM_VERSION).
    a = anatomy if anatomy is not None else draw_anatomy(rng)
    u, v = _pose_grid(rng, size)

    # Attenuation map, (S, S) float32, roughly 0 (air) .. 1 (bone over soft tissue).  The
    # terms are added one by one, in a fixed order: the sums (and so the pixels) depend on it.
    body = _body(u, v, a)
    att = 0.03 + a["tissue"] * body
    att += 0.08 * _smoothstep((v - 0.35) / 0.5) * body  # abdomen: denser lower down
    lungs = _lung_fields(u, v, a, _LUNG_EDGE)
    lung_soft = np.clip(lungs[0] + lungs[1], 0.0, 1.0)
    # Heart and mediastinum lie in front of / between the lungs and hide their air.
    occluder = _occluder(u, v, a)
    lung_visible = lung_soft * (1.0 - occluder)
    att -= 0.34 * lung_visible  # air in the lungs
    att += 0.045 * _vessels(u, v, rng) * lung_visible
    _add_hila_and_bones(att, u, v, a, body, lung_soft, occluder)

    lesion = _lesion(label, u, v, lungs, a, rng, size)
    if label != "normal":
        att += _LESION_WEIGHT[label] * lesion * lung_visible.clip(0.3, 1.0)
    lesion_mask = _lesion_mask(label, lesion, lung_soft, size)
    image = _detector(att, u, v, rng, size)
    return {
        "image": image,
        "lesion": np.asarray(lesion_mask, dtype=bool),
        "lungs": lung_soft > 0.5,
        "label": label,
        "severity": float(lesion[lesion_mask].mean()) if lesion_mask.any() else 0.0,
    }


def _body(u: np.ndarray, v: np.ndarray, a: dict) -> np.ndarray:
    """Soft-tissue silhouette (0..1, (S, S)): torso, shoulders and neck."""
    # Torso: a rounded rectangle (superellipse) merging into the shoulders and neck.
    torso_r = np.abs(u / a["torso_width"]) ** 3.0 + np.abs((v - 0.25) / 1.05) ** 2.2
    torso = _sigmoid((1.0 - torso_r) / 0.04)
    shoulders = np.maximum(
        _ellipse(u, v, -0.6, -0.68, 0.38, 0.17, 0.06), _ellipse(u, v, 0.6, -0.68, 0.38, 0.17, 0.06)
    )
    neck = _sigmoid((0.2 - np.abs(u)) / 0.03) * _sigmoid((-0.6 - v) / -0.05)
    return np.clip(np.maximum(np.maximum(torso, shoulders), neck), 0.0, 1.0)


def _occluder(u: np.ndarray, v: np.ndarray, a: dict) -> np.ndarray:
    """How much heart, mediastinum and aortic knob hide the lungs behind them (0..1, (S, S))."""
    heart_cy = a["lung_bottom"] - 0.17
    heart = _ellipse(u, v, a["heart_cx"], heart_cy, a["heart_rx"], a["heart_ry"], 0.05, angle=-0.35)
    mediastinum = _sigmoid((0.11 - np.abs(u)) / 0.025) * _sigmoid((v + 0.75) / 0.03)
    aorta = _ellipse(u, v, 0.12, -0.3, 0.075, 0.06, 0.1)
    return np.clip(0.85 * heart + 0.8 * mediastinum + 0.6 * aorta, 0.0, 1.0)


def _vessels(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vascular markings ((S, S), >= 0): radial streaks from each hilum, fading towards the periphery."""
    texture = rng.standard_normal((96, 12)).astype(np.float32)  # (angle, radius) streak pattern
    vessels = np.zeros_like(u)
    for hx in (-0.17, 0.17):
        du, dv = u - hx, v + 0.03
        r = np.hypot(du, dv)
        theta = np.arctan2(dv, du)
        streak = _sample_periodic(texture, theta / (2 * math.pi) * 96, r * 12)
        vessels += np.clip(streak, 0, None) * np.exp(-r / 0.3)
    return vessels


def _add_hila_and_bones(att: np.ndarray, u: np.ndarray, v: np.ndarray, a: dict, body: np.ndarray,
                        lung_soft: np.ndarray, occluder: np.ndarray) -> None:
    """Add the hila, spine, ribs and clavicles to the attenuation map ``att`` in place."""
    for hx in (-0.16, 0.16):
        att += 0.06 * _ellipse(u, v, hx, -0.04, 0.06, 0.08, 0.15) * lung_soft  # hila
    att += 0.05 * _spine(u, v) * (0.4 + 0.6 * (1.0 - occluder))
    att += 0.06 * _ribs(u, v, a) * body * (0.45 + 0.55 * lung_soft)  # fainter over soft tissue
    att += 0.14 * _clavicles(u, v) * body


def _lesion(label: str, u: np.ndarray, v: np.ndarray, lungs: list[np.ndarray], a: dict,
            rng: np.random.Generator, size: int) -> np.ndarray:
    """The label's added density (0..1, (S, S)): consolidation, interstitial pattern, or none."""
    if label == "bacterial":
        return _consolidation(u, v, lungs, a, rng, size)
    if label == "viral":
        return _interstitial(u, v, lungs, a, rng, size)
    return np.zeros_like(u)


def _lesion_mask(label: str, lesion: np.ndarray, lung_soft: np.ndarray, size: int) -> np.ndarray:
    """Where the lesion is (bool, (S, S)): the consolidation, or the clearly involved lung area."""
    if label == "bacterial":
        return lesion > 0.25
    if label == "viral":
        # Diffuse disease has no sharp edge: call "involved" the lung area where the smoothed
        # pattern is above 60 % of its mean over the lungs (a relative threshold, so subtle
        # cases still get a mask, in both lungs).
        smooth = _gaussian_filter(lesion, size / 40)
        in_lungs = lung_soft > 0.5
        level = float(smooth[in_lungs].mean()) if in_lungs.any() else 0.0
        return in_lungs & (smooth > 0.6 * level)
    return np.zeros(lesion.shape, dtype=bool)


def _detector(att: np.ndarray, u: np.ndarray, v: np.ndarray, rng: np.random.Generator,
              size: int) -> np.ndarray:
    """The radiograph the detector makes of ``att``: uint8 (S, S), bright = dense."""
    # Blur (MTF), exposure/contrast/gamma, quantum noise, then the lead marker.
    img = _gaussian_filter(att, rng.uniform(0.4, 1.1) * size / 256)
    lo = rng.uniform(0.0, 0.08)
    img = np.clip((img - lo) / rng.uniform(0.70, 0.95), 0.0, 1.0)
    img = img ** rng.uniform(0.75, 1.3)
    img = img * rng.uniform(0.85, 1.0) + rng.uniform(0.0, 0.06)
    # Slow exposure gradient across the film (heel effect).
    img *= 1.0 + rng.uniform(-0.06, 0.06) * (u if rng.random() < 0.5 else v)
    noise = rng.standard_normal(img.shape).astype(np.float32)
    img += rng.uniform(0.008, 0.03) * _gaussian_filter(noise, 0.5 * size / 256) * 2.0
    img = np.maximum(img, _draw_marker(size, rng) * rng.uniform(0.85, 1.0))
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
