"""MAPSeg's intensity convention, applied to whole cases (never to patches) so that training and inference
see identical inputs:

1. CT channels are shifted by +1024 HU;
2. negative values are set to 0;
3. each channel is divided into [0, 1] by its own percentile over the whole scan:
   ``x <- clip((x - min) / (P_p(x) - min), 0, 1)``, with p = 99.5 at inference and, during training, p drawn
   from U(99, 100) with probability 0.35 (otherwise 99.5).

Background therefore stays exactly 0. The settings live in the plans (``configurations[c]['mapseg']
['intensity']``); ``None`` there means the data were already normalised by nnU-Net's own scheme (stock plans)
and are used as they are.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

DEFAULT_INTENSITY = {
    "scheme": "mapseg_percentile",
    "ct_channels": [],
    "ct_offset": 1024.0,
    "inference_percentile": 99.5,
    "train_percentile_range": [99.0, 100.0],
    "train_percentile_probability": 0.35,
}


def intensity_settings_for_channels(channel_names: Sequence[str]) -> dict:
    settings = dict(DEFAULT_INTENSITY)
    settings["ct_channels"] = [i for i, name in enumerate(channel_names) if name.strip().upper() == "CT"]
    return settings


def draw_training_percentile(settings: dict, rng: np.random.Generator | None = None) -> float:
    rng = rng if rng is not None else np.random.default_rng()
    if rng.random() < settings["train_percentile_probability"]:
        low, high = settings["train_percentile_range"]
        return float(rng.uniform(low, high))
    return float(settings["inference_percentile"])


def normalize_case(image: np.ndarray, settings: Optional[dict], percentile: Optional[float] = None) -> np.ndarray:
    """Normalise a whole case ``(C, X, Y, Z)``; returns a new float32 array. ``percentile`` defaults to the
    inference percentile."""
    image = np.asarray(image, dtype=np.float32)
    if settings is None:
        return image
    if settings.get("scheme") != "mapseg_percentile":
        raise ValueError(f"Unknown MAPSeg intensity scheme {settings.get('scheme')!r}")
    percentile = settings["inference_percentile"] if percentile is None else percentile
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        channel = image[c] + settings["ct_offset"] if c in settings["ct_channels"] else image[c]
        channel = np.maximum(channel, 0)
        low = float(channel.min())
        high = float(np.percentile(channel, percentile))
        if high <= low:
            out[c] = 0
        else:
            out[c] = np.clip((channel - low) / (high - low), 0, 1)
    return out
