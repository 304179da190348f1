"""Class-wise random intensities for labeled source samples: a teacher that has seen every ordering of tissues.

Contrast randomization by one intensity curve (:mod:`mapseg_nnunet.data.intensity_augmentation`) keeps the order
of the tissues or reverses it; it cannot make grey matter brighter than white matter while CSF stays darkest (the
unmyelinated infant brain). Here each label class is re-rendered on its own, after SynthSeg (per-label random
intensities), SLAug (class-wise curves) and FetalSynthSeg (each class split into intensity sub-clusters, so that a
class with several tissues inside, e.g. "CSF" with vessels, keeps structure):

* :func:`fit_subclusters` splits each class into up to ``max_clusters`` intensity sub-clusters (1-D k-means on
  the class's intensities; a class with fewer distinct values gets fewer clusters) and :meth:`Subclusters.assign`
  gives any view of the case its cluster map (0 = background, ``1 + class_index * max_clusters + j`` otherwise).
  Fitted on the sample's global view (the whole foreground box at the patch's resolution, in the sample's own
  intensity space) and assigned to both views, the patch's clusters are those of its global context.
* :func:`draw_cluster_intensities` draws one rendering per sample: for every cluster a target mean uniform over
  ``[0, 1]`` (every ordering of the clusters is reachable, including the inversions a single curve cannot make),
  a target spread, and a mode: ``gaussian`` replaces the cluster's voxels by noise around the mean (SynthSeg),
  ``location_scale`` keeps the cluster's own texture, standardised, rescaled and inverted with probability
  ``invert_probability``.
* :func:`render_clusters` applies one rendering to a view (C, X, Y, Z) with its cluster map; the same rendering,
  the case's cluster statistics and one value range (:func:`foreground_range` of the global view) render both
  views, so the patch and its global context keep one contrast. Background voxels (cluster 0) keep their values;
  the rendered foreground is mapped onto the value range, so magnitudes stay those of the normalised input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform

MODES = ("gaussian", "location_scale")


def _kmeans_1d(values: np.ndarray, k: int, iterations: int = 20) -> np.ndarray:
    """Sorted centres of a 1-D k-means on ``values`` (initialised at quantiles; deterministic)."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        assignment = np.abs(values[:, None] - centres[None]).argmin(1)
        updated = np.array([values[assignment == j].mean() if (assignment == j).any() else centres[j]
                            for j in range(k)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return np.sort(centres)


@dataclass
class Subclusters:
    """Intensity sub-clusters of the classes of one case: per class (``classes[i]``) the sorted boundaries between
    its sub-clusters, and each cluster's intensity mean and standard deviation (cluster id ``1 + i *
    max_clusters + j`` for sub-cluster ``j``; 0 is background and unlisted labels)."""
    classes: Tuple[int, ...]
    max_clusters: int
    edges: Dict[int, np.ndarray]
    statistics: Dict[int, Tuple[float, float]]

    def assign(self, image, labels) -> np.ndarray:
        """(X, Y, Z) int16 cluster map of a view: ``image`` (C, X, Y, Z) (channel mean), ``labels`` (X, Y, Z), in
        the intensity space the sub-clusters were fitted in."""
        intensity = np.asarray(image, dtype=np.float32).mean(0)
        labels = np.asarray(labels)
        clusters = np.zeros(intensity.shape, dtype=np.int16)
        for i, c in enumerate(self.classes):
            voxels = labels == c
            if c in self.edges and voxels.any():
                clusters[voxels] = 1 + i * self.max_clusters + np.searchsorted(self.edges[c], intensity[voxels])
        return clusters


def fit_subclusters(image, labels, classes: Sequence[int], max_clusters: int = 3, sample: int = 20000,
                    seed: int = 0) -> Subclusters:
    """Split each of ``classes`` into up to ``max_clusters`` intensity sub-clusters (channel mean of ``image`` (C,
    X, Y, Z); ``labels`` (X, Y, Z)) with a 1-D k-means on at most ``sample`` of its voxels (deterministic for
    ``seed``); a class with fewer distinct values gets fewer clusters, an absent class none."""
    if max_clusters < 1:
        raise ValueError(f"max_clusters must be >= 1, got {max_clusters}")
    intensity = np.asarray(image, dtype=np.float32).mean(0)
    labels = np.asarray(labels)
    if labels.shape != intensity.shape:
        raise ValueError(f"labels {labels.shape} and image {intensity.shape} differ in shape")
    rng = np.random.default_rng(seed)
    edges, statistics = {}, {}
    for i, c in enumerate(classes):
        values = intensity[labels == c]
        if not values.size:
            continue
        fit = values if values.size <= sample else rng.choice(values, sample, replace=False)
        centres = _kmeans_1d(fit.astype(np.float64), int(min(max_clusters, np.unique(fit).size)))
        edges[int(c)] = (centres[1:] + centres[:-1]) / 2
        ids = 1 + i * max_clusters + np.searchsorted(edges[int(c)], values)
        for cluster in np.unique(ids):
            members = values[ids == cluster]
            statistics[int(cluster)] = (float(members.mean()), float(members.std()))
    return Subclusters(tuple(int(c) for c in classes), int(max_clusters), edges, statistics)


def intensity_subclusters(image, labels, classes: Sequence[int], max_clusters: int = 3, sample: int = 20000,
                          seed: int = 0) -> Tuple[np.ndarray, Dict[int, Tuple[float, float]]]:
    """(cluster map, cluster statistics) of one image: :func:`fit_subclusters` then :meth:`Subclusters.assign`."""
    fitted = fit_subclusters(image, labels, classes, max_clusters, sample, seed)
    return fitted.assign(image, labels), fitted.statistics


@dataclass
class ClusterRendering:
    """One draw: per cluster id, its target mean and spread (in [0, 1] before the range mapping), mode and sign."""
    means: Dict[int, float]
    spreads: Dict[int, float]
    modes: Dict[int, str]
    signs: Dict[int, float]


def draw_cluster_intensities(cluster_ids: Sequence[int], gaussian_probability: float = 0.5,
                             invert_probability: float = 0.5, spread_range=(0.01, 0.08),
                             rng: np.random.Generator = None) -> ClusterRendering:
    """A random rendering of the clusters ``cluster_ids`` (0 is background and never drawn)."""
    rng = rng if rng is not None else np.random.default_rng(np.random.randint(0, 2 ** 31))
    ids = sorted(int(c) for c in cluster_ids if int(c) != 0)
    means = {c: float(rng.uniform(0, 1)) for c in ids}
    spreads = {c: float(rng.uniform(*spread_range)) for c in ids}
    modes = {c: MODES[0] if rng.uniform() < gaussian_probability else MODES[1] for c in ids}
    signs = {c: -1.0 if rng.uniform() < invert_probability else 1.0 for c in ids}
    return ClusterRendering(means, spreads, modes, signs)


def foreground_range(view: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor:
    """(C, 2) min and max of each channel of ``view`` (C, X, Y, Z) over its labelled clusters: the range a
    rendering is mapped onto. Take it from the global view and use it for both views."""
    foreground = clusters > 0
    if not bool(foreground.any()):
        return torch.tensor([[0.0, 1.0]] * view.shape[0])
    values = view.float()[:, foreground]
    return torch.stack([values.min(1).values, values.max(1).values], 1)


def render_clusters(view: torch.Tensor, clusters: torch.Tensor, rendering: ClusterRendering,
                    statistics: Dict[int, Tuple[float, float]], value_range: torch.Tensor,
                    generator: torch.Generator = None) -> torch.Tensor:
    """``view`` (C, X, Y, Z) re-rendered cluster by cluster (``clusters`` (X, Y, Z): the view's cluster map;
    ``statistics``: each cluster's intensity mean and standard deviation in the case, from
    :func:`intensity_subclusters`); background (cluster 0) and clusters the rendering does not know keep their
    values. The rendering, in [0, 1], is mapped onto ``value_range`` (C, 2) per channel
    (:func:`foreground_range` of the global view), so both views of a sample get the same contrast."""
    view = view.float()
    out = view.clone()
    clusters = clusters.to(torch.int64)
    rendered = torch.zeros(view.shape[1:], dtype=torch.float32)
    known = torch.zeros(view.shape[1:], dtype=torch.bool)
    intensity = view.mean(0)
    for c, mean in rendering.means.items():
        voxels = clusters == c
        n = int(voxels.sum())
        if n == 0:
            continue
        spread = rendering.spreads[c]
        if rendering.modes[c] == "gaussian":
            rendered[voxels] = mean + spread * torch.randn(n, generator=generator)
        else:
            centre, scale = statistics.get(c, (0.0, 1.0))
            standardised = (intensity[voxels] - centre) / max(scale, 1e-6)
            rendered[voxels] = mean + rendering.signs[c] * spread * standardised
        known |= voxels
    if not bool(known.any()):
        return out
    for channel in range(view.shape[0]):
        lo, hi = value_range[channel].tolist()
        out[channel][known] = lo + rendered[known].clamp(0, 1) * (hi - lo)
    return out


class ClassWiseIntensityTransform(BasicTransform):
    """batchgeneratorsv2 transform: the image re-rendered per class sub-cluster (module docstring). Its parameters
    come from a reference view with its labels (``get_parameters(image=..., segmentation=...)``: the sub-clusters
    fitted there, one rendering, the value range) and apply to any view of the same sample with that view's labels
    (``apply_to_view``); ``apply`` does both on one data dict (image + segmentation)."""

    def __init__(self, classes: Optional[Sequence[int]] = None, max_clusters: int = 3,
                 gaussian_probability: float = 0.5, invert_probability: float = 0.5, spread_range=(0.01, 0.08)):
        super().__init__()
        if classes is not None and not len(classes):
            raise ValueError("ClassWiseIntensityTransform: classes must name at least one label (or be None: "
                             "every positive label of the reference view)")
        for name, p in (("gaussian_probability", gaussian_probability), ("invert_probability", invert_probability)):
            if not 0 <= p <= 1:
                raise ValueError(f"ClassWiseIntensityTransform: {name} must be in [0, 1], got {p}")
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self.max_clusters = int(max_clusters)
        self.gaussian_probability, self.invert_probability = gaussian_probability, invert_probability
        self.spread_range = tuple(spread_range)

    def get_parameters(self, **data_dict) -> dict:
        image = data_dict["image"].float()
        labels = data_dict["segmentation"][0]
        classes = self.classes if self.classes is not None else \
            [int(c) for c in torch.unique(labels).tolist() if c > 0]
        fitted = fit_subclusters(image.numpy(), labels.numpy(), classes, self.max_clusters,
                                 seed=int(np.random.randint(0, 2 ** 31)))
        rendering = draw_cluster_intensities(
            list(fitted.statistics), self.gaussian_probability, self.invert_probability, self.spread_range,
            rng=np.random.default_rng(np.random.randint(0, 2 ** 31)))
        clusters = torch.from_numpy(fitted.assign(image.numpy(), labels.numpy()))
        return {"subclusters": fitted, "rendering": rendering, "value_range": foreground_range(image, clusters)}

    def apply_to_view(self, image: torch.Tensor, labels: torch.Tensor, **params) -> torch.Tensor:
        """``image`` (C, X, Y, Z) of one view re-rendered with its ``labels`` (1, X, Y, Z) and the parameters."""
        fitted: Subclusters = params["subclusters"]
        clusters = torch.from_numpy(fitted.assign(image.float().numpy(), labels[0].numpy()))
        return render_clusters(image, clusters, params["rendering"], fitted.statistics,
                               params["value_range"]).to(image.dtype)

    def apply(self, data_dict: dict, **params) -> dict:
        data_dict["image"] = self.apply_to_view(data_dict["image"], data_dict["segmentation"], **params)
        return data_dict
