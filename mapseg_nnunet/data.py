"""Datasets that hand nnU-Net's data loaders whole cases already in MAPSeg's intensity convention."""
from __future__ import annotations

import numpy as np

from mapseg_nnunet.intensity import draw_training_percentile, normalize_case


class IntensityNormalizedDataset:
    """Wraps an nnU-Net dataset (``nnUNetDatasetBlosc2``/``nnUNetDatasetNumpy``): ``load_case`` returns the
    whole case normalised per :mod:`mapseg_nnunet.intensity`, with the training percentile jitter when
    ``training`` is set. With ``settings=None`` (stock plans) cases pass through unchanged."""

    def __init__(self, dataset, settings: dict | None, training: bool):
        self.dataset = dataset
        self.settings = settings
        self.training = training

    @property
    def identifiers(self):
        return self.dataset.identifiers

    def __getitem__(self, identifier):
        return self.load_case(identifier)

    def load_case(self, identifier):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        if self.settings is not None:
            percentile = draw_training_percentile(self.settings, np.random.default_rng(
                np.random.randint(0, 2 ** 31))) if self.training else None
            data = normalize_case(np.asarray(data), self.settings, percentile)
        return data, seg, seg_prev, properties
