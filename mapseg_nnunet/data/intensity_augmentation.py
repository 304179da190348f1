"""Intensity augmentation of global-local samples: nnU-Net's own intensity transforms and contrast randomization.

Every transform here is a batchgeneratorsv2 image transform (``get_parameters`` / ``_apply_to_image``). A MAPSeg
sample has two views of one case, the local patch and the global view; :func:`transform_views` draws each
transform's parameters **once** (from the global view, which covers the whole foreground) and applies them to both
views, so the global context and the patch inside it keep the same contrast. Afterwards every voxel outside the
foreground (non-zero voxels of any channel before augmentation: MAPSeg's intensity convention keeps background at
exactly 0; on data without a zero background the whole view is foreground) gets its original value back.

* **nnU-Net's intensity augmentation** (:func:`nnunet_intensity_transforms`): the noise, blur, brightness,
  contrast, low-resolution and gamma transforms of nnU-Net's default training pipeline, taken from
  ``nnUNetTrainer.get_training_transforms`` itself with nnU-Net's probabilities (spatial transforms are left out:
  the global-local sampler does those on the whole case).
* **Contrast randomization** (beyond the paper; a source model robust to contrast before any pseudo-label is
  trusted):

  - :class:`RandomConvolutionTransform`, GIN-style (global intensity non-linear augmentation): a freshly drawn
    shallow random convolutional network (kernel 1 or 3 per layer, Gaussian weights, leaky ReLU in between), its
    output rescaled per channel to the input's foreground range and blended with the input by ``alpha ~ U(0, 1)``;
  - :class:`RandomIntensityRemapTransform`: a random monotone piecewise-linear curve over the foreground's
    intensity range, decreasing (contrast inverted: dark tissue becomes bright, as from T1w to T2w or in the
    unmyelinated infant brain) with probability ``invert_probability``;
  - the same transform with ``monotone=False``: a random look-up table, label-free, under which intensity bands
    (tissues) can take any order;
  - class-wise random intensities (labeled views only; :mod:`mapseg_nnunet.data.class_intensity`): every label
    class, split into intensity sub-clusters, re-rendered on its own, so that every ordering of the tissues is
    reachable. It runs first, before the transforms above.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from mapseg_nnunet.compat import apply_to_image
from mapseg_nnunet.data.class_intensity import ClassWiseIntensityTransform

NNUNET_INTENSITY_TRANSFORMS = (GaussianNoiseTransform, GaussianBlurTransform, MultiplicativeBrightnessTransform,
                               ContrastTransform, SimulateLowResolutionTransform, GammaTransform)


def foreground_mask(image: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z) bool: voxels non-zero in any channel of ``image`` (C, X, Y, Z)."""
    return (image != 0).any(0)


def _channel_ranges(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(C, 2) min and max of each channel over ``mask`` (0, 1 when the mask is empty)."""
    if not bool(mask.any()):
        return torch.tensor([[0.0, 1.0]] * image.shape[0])
    values = image[:, mask]
    return torch.stack([values.min(1).values, values.max(1).values], 1).float()


class RandomConvolutionTransform(ImageOnlyTransform):
    """GIN-style contrast randomization: ``alpha * rescale(net(x)) + (1 - alpha) * x`` on the foreground, with a
    random shallow conv net ``net`` drawn per sample; ``rescale`` maps the net's output range on the reference
    view's foreground to the input's range there, channel by channel."""

    def __init__(self, layers: int = 4, hidden_channels: int = 2, kernel_sizes: Sequence[int] = (1, 3),
                 blend: Sequence[float] = (0.0, 1.0), negative_slope: float = 0.2):
        super().__init__()
        if layers < 1 or hidden_channels < 1:
            raise ValueError(f"RandomConvolutionTransform needs layers >= 1 and hidden_channels >= 1, got {layers}, "
                             f"{hidden_channels}")
        self.layers, self.hidden_channels = layers, hidden_channels
        self.kernel_sizes, self.blend, self.negative_slope = tuple(kernel_sizes), tuple(blend), negative_slope

    def _network(self, image: torch.Tensor, weights) -> torch.Tensor:
        x = image[None].float()
        for i, (w, b) in enumerate(weights):
            x = F.conv3d(x, w, b, padding=w.shape[-1] // 2)
            if i < len(weights) - 1:
                x = F.leaky_relu(x, self.negative_slope)
        return x[0]

    def get_parameters(self, **data_dict) -> dict:
        image = data_dict["image"]
        channels, weights = image.shape[0], []
        fan_in = channels
        for i in range(self.layers):
            out = channels if i == self.layers - 1 else self.hidden_channels
            k = int(self.kernel_sizes[np.random.randint(len(self.kernel_sizes))])
            weights.append((torch.randn(out, fan_in, k, k, k), torch.randn(out)))
            fan_in = out
        mask = foreground_mask(image)
        return {"weights": weights, "alpha": float(np.random.uniform(*self.blend)),
                "input_range": _channel_ranges(image, mask),
                "output_range": _channel_ranges(self._network(image, weights), mask)}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        mask = foreground_mask(img)
        lo_in, hi_in = params["input_range"].T.reshape(2, -1, 1, 1, 1)
        lo_out, hi_out = params["output_range"].T.reshape(2, -1, 1, 1, 1)
        raw = self._network(img, params["weights"])
        scaled = (raw - lo_out) / (hi_out - lo_out).clamp_min(1e-8) * (hi_in - lo_in) + lo_in
        mixed = params["alpha"] * scaled + (1 - params["alpha"]) * img.float()
        return torch.where(mask[None], mixed, img.float()).to(img.dtype)


class RandomIntensityRemapTransform(ImageOnlyTransform):
    """Random monotone piecewise-linear intensity curve per channel over the reference view's foreground range
    ``[lo, hi]`` (values outside it are clipped into it), decreasing with probability ``invert_probability``
    (signed slope: contrast inverted). With ``monotone=False`` the curve is a random look-up table instead: every
    knot's value drawn uniformly on its own, so that intensity bands can swap places in any order without labels
    (the label-free counterpart of class-wise intensities)."""

    def __init__(self, control_points: int = 5, invert_probability: float = 0.5, monotone: bool = True):
        super().__init__()
        if control_points < 1 or not 0 <= invert_probability <= 1:
            raise ValueError(f"RandomIntensityRemapTransform needs control_points >= 1 and invert_probability in "
                             f"[0, 1], got {control_points}, {invert_probability}")
        self.control_points, self.invert_probability = control_points, invert_probability
        self.monotone = monotone

    def get_parameters(self, **data_dict) -> dict:
        image = data_dict["image"]
        curves = []
        for _ in range(image.shape[0]):
            if not self.monotone:  # a look-up table: knots (the ends included) in any order
                curves.append(torch.as_tensor(np.random.uniform(0, 1, self.control_points + 2), dtype=torch.float32))
                continue
            inner = np.sort(np.random.uniform(0, 1, self.control_points))
            values = np.concatenate([[0.0], inner, [1.0]])
            if np.random.uniform() < self.invert_probability:
                values = 1 - values
            curves.append(torch.as_tensor(values, dtype=torch.float32))
        return {"curves": curves, "input_range": _channel_ranges(image, foreground_mask(image))}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        mask = foreground_mask(img)
        out = img.clone().float()
        for c, curve in enumerate(params["curves"]):
            lo, hi = params["input_range"][c].tolist()
            t = ((img[c].float() - lo) / max(hi - lo, 1e-8)).clamp(0, 1)
            knots = torch.linspace(0, 1, len(curve))
            segment = torch.bucketize(t, knots[1:-1])  # knot interval of each voxel
            fraction = (t - knots[segment]) / (knots[1] - knots[0])
            mapped = curve[segment] + fraction * (curve[segment + 1] - curve[segment])
            out[c] = torch.where(mask, lo + mapped * (hi - lo), out[c])
        return out.to(img.dtype)


def nnunet_intensity_transforms() -> List[BasicTransform]:
    """The intensity transforms of nnU-Net's default 3D training pipeline, with nnU-Net's probabilities, in
    nnU-Net's order (taken from ``nnUNetTrainer.get_training_transforms``)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    pipeline = nnUNetTrainer.get_training_transforms((32, 32, 32), (0, 0), None, (), False)
    return [t for t in _flatten(pipeline)
            if isinstance(t, RandomTransform) and isinstance(t.transform, NNUNET_INTENSITY_TRANSFORMS)]


def _flatten(transform: BasicTransform) -> List[BasicTransform]:
    if isinstance(transform, ComposeTransforms):
        return [leaf for t in transform.transforms for leaf in _flatten(t)]
    return [transform]


@dataclass
class IntensityAugmentation:
    """Trainer setting: which intensity augmentation a sampler applies to its views (all off: the paper)."""
    nnunet: bool = False              # nnU-Net's intensity transforms
    gin_probability: float = 0.0      # GIN-style random convolution
    remap_probability: float = 0.0    # random intensity remapping
    remap_invert_probability: float = 0.5
    class_wise_probability: float = 0.0           # class-wise random intensities (labeled views only)
    class_wise_clusters: int = 3                  # intensity sub-clusters per class, at most
    class_wise_gaussian_probability: float = 0.5  # per cluster: Gaussian noise, else its own texture rescaled
    class_wise_invert_probability: float = 0.5    # per cluster: the texture inverted
    lookup_table_probability: float = 0.0         # random non-monotone look-up table (label-free)
    lookup_table_points: int = 8                  # its inner knots over the foreground range

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        for name in ("gin_probability", "remap_probability", "remap_invert_probability", "class_wise_probability",
                     "class_wise_gaussian_probability", "class_wise_invert_probability",
                     "lookup_table_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"intensity augmentation: {name} must be in [0, 1], got {getattr(self, name)}")
        if int(self.class_wise_clusters) < 1:
            raise ValueError(f"intensity augmentation: class_wise_clusters must be >= 1, got "
                             f"{self.class_wise_clusters}")
        if int(self.lookup_table_points) < 1:
            raise ValueError(f"intensity augmentation: lookup_table_points must be >= 1, got "
                             f"{self.lookup_table_points}")

    @property
    def active(self) -> bool:
        return self.nnunet or self.gin_probability > 0 or self.remap_probability > 0 or \
            self.class_wise_probability > 0 or self.lookup_table_probability > 0

    @property
    def needs_labels(self) -> bool:
        """Class-wise intensities re-render label classes: only views with labels (the labeled source) can."""
        return self.class_wise_probability > 0

    def transforms(self) -> List[BasicTransform]:
        self.check()
        chain = []
        if self.class_wise_probability > 0:
            chain.append(RandomTransform(ClassWiseIntensityTransform(
                None, int(self.class_wise_clusters), self.class_wise_gaussian_probability,
                self.class_wise_invert_probability), self.class_wise_probability))
        if self.gin_probability > 0:
            chain.append(RandomTransform(RandomConvolutionTransform(), self.gin_probability))
        if self.remap_probability > 0:
            chain.append(RandomTransform(RandomIntensityRemapTransform(
                invert_probability=self.remap_invert_probability), self.remap_probability))
        if self.lookup_table_probability > 0:
            chain.append(RandomTransform(RandomIntensityRemapTransform(
                control_points=int(self.lookup_table_points), monotone=False), self.lookup_table_probability))
        if self.nnunet:
            chain += nnunet_intensity_transforms()
        return chain


def transform_views(transforms: Sequence[BasicTransform], views: Sequence[torch.Tensor],
                    labels: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
    """Apply ``transforms`` to the views (C, X, Y, Z) of one sample with parameters drawn once, from the last
    view (the global view); voxels outside each view's foreground keep their values. ``labels`` (1, X, Y, Z) per
    view: needed by class-wise intensities."""
    originals = [v.float() for v in views]
    masks = [foreground_mask(v) for v in originals]
    views = [v.clone() for v in originals]
    for transform in transforms:
        views = _apply_with_shared_parameters(transform, views, labels)
    return [torch.where(m[None], v, o) for v, o, m in zip(views, originals, masks)]


def _apply_with_shared_parameters(transform: BasicTransform, views: List[torch.Tensor],
                                  labels: Optional[Sequence[torch.Tensor]]) -> List[torch.Tensor]:
    if isinstance(transform, ComposeTransforms):
        for t in transform.transforms:
            views = _apply_with_shared_parameters(t, views, labels)
        return views
    if isinstance(transform, RandomTransform):
        if not transform.get_parameters()["apply_transform"]:
            return views
        return _apply_with_shared_parameters(transform.transform, views, labels)
    if isinstance(transform, ClassWiseIntensityTransform):
        if labels is None:
            raise ValueError("class-wise intensities re-render label classes: they apply to labeled views only")
        params = transform.get_parameters(image=views[-1], segmentation=labels[-1])
        return [transform.apply_to_view(v, s, **params) for v, s in zip(views, labels)]
    params = transform.get_parameters(image=views[-1])
    return [apply_to_image(transform, v, **params) for v in views]
