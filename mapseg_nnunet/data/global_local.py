"""Global-local data loaders: batches of global-local samples (a local patch, the case's foreground box resized to
the patch size, the patch's box inside it; :mod:`mapseg_nnunet.data.case_sampler`) from one or more nnU-Net
datasets.

:class:`GlobalLocalDataLoader` samples inside nnU-Net's background workers (it is a batchgenerators
``DataLoader``), sampling domains uniformly (domain-balanced) and then a case within the domain. Intensity
augmentation (:mod:`mapseg_nnunet.data.intensity_augmentation`) comes last, with the same parameters for both views
of a sample: ``intensity_augmentation`` changes the views themselves (labeled source),
``student_intensity_augmentation`` adds augmented copies ``student_data`` / ``student_global`` next to the clean
views (unlabeled targets: clean views for the teacher's pseudo-labels, augmented ones for the student).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgenerators.dataloading.data_loader import DataLoader

from mapseg_nnunet.data.case_sampler import CaseSampler
from mapseg_nnunet.data.intensity import draw_training_percentile
from mapseg_nnunet.data.intensity_augmentation import IntensityAugmentation, transform_views
from mapseg_nnunet.data.sample_geometry import NO_AUGMENTATION, GlobalLocalAugmentation

# per data loader (one per background worker): the per-case samplers kept in memory (about 2.5 MB per case at the
# CPU preset's 32^3 patch; a full 1 mm brain case at the paper preset's 96^3)
SAMPLER_CACHE_BYTES = 1 << 30


class GlobalLocalDataLoader(DataLoader):
    """Batches of global-local samples from one or more domains (nnU-Net datasets), domain-balanced.

    Keys: ``data``, ``global`` (B, C, *patch) float32, ``box`` (B, 3, 2), ``voxels_in_box`` (B, 3, 2) int64 (the
    patch's voxels inside the case's foreground box), ``domain`` (B,) int64, ``keys``;
    ``target``/``global_target`` (B, 1, *patch) when ``with_labels``; ``student_data``/``student_global`` when
    ``student_intensity_augmentation`` is active (``intensity_augmentation`` changes ``data`` / ``global``
    themselves). Labeled domains keep nnU-Net's -1 outside the non-zero mask; callers map it to background for the
    loss."""

    def __init__(self, domains: List[Tuple[str, object]], batch_size: int, patch_size: Sequence[int],
                 intensity: Optional[dict], augmentation: GlobalLocalAugmentation, with_labels: bool,
                 training: bool = True, intensity_augmentation: Optional[IntensityAugmentation] = None,
                 student_intensity_augmentation: Optional[IntensityAugmentation] = None,
                 cache_bytes: int = SAMPLER_CACHE_BYTES, box_probability: float = 1.0):
        super().__init__(domains, batch_size, num_threads_in_multithreaded=1, seed_for_shuffle=None,
                         return_incomplete=True, shuffle=False, infinite=True)
        if not domains:
            raise ValueError("GlobalLocalDataLoader needs at least one domain")
        self.domains = domains
        self.patch_size = tuple(int(p) for p in patch_size)
        self.intensity = intensity
        self.augmentation = augmentation
        self.with_labels = with_labels
        self.training = training
        for name, augmentation in (("views", intensity_augmentation), ("student", student_intensity_augmentation)):
            if augmentation is not None and augmentation.needs_labels and (not with_labels or name == "student"):
                raise ValueError(f"class-wise intensities (class_wise_probability > 0) re-render label classes: "
                                 f"they apply to the labeled source's views only, not to the {name} intensity "
                                 f"augmentation of {'unlabeled' if not with_labels else 'target student'} samples")
        self.view_transforms = (intensity_augmentation.transforms()
                                if intensity_augmentation is not None and intensity_augmentation.active else [])
        self.student_transforms = (student_intensity_augmentation.transforms()
                                   if student_intensity_augmentation is not None
                                   and student_intensity_augmentation.active else [])
        self.rng = None
        self.cache_bytes = cache_bytes
        if not 0 <= box_probability <= 1:
            raise ValueError(f"the probability of a local patch inside the foreground box (the trainer's "
                             f"oversample_foreground_percent) must be in [0, 1], got {box_probability}")
        self.box_probability = float(box_probability)  # else the patch lies anywhere in the case
        self._cases: "OrderedDict[tuple, CaseSampler]" = OrderedDict()
        self._cached_bytes = 0

    def _case_sampler(self, key, data, seg) -> CaseSampler:
        """The case's :class:`CaseSampler`, kept (least recently used first out) within ``cache_bytes``."""
        sampler = self._cases.get(key)
        if sampler is None:
            sampler = CaseSampler(data, seg, self.patch_size, self.intensity, with_labels=self.with_labels)
            self._cases[key] = sampler
            self._cached_bytes += sampler.nbytes
            while self._cached_bytes > self.cache_bytes and len(self._cases) > 1:
                self._cached_bytes -= self._cases.popitem(last=False)[1].nbytes
        else:
            self._cases.move_to_end(key)
        return sampler

    def __getstate__(self):  # background workers start with an empty cache
        state = dict(self.__dict__)
        state["_cases"], state["_cached_bytes"] = OrderedDict(), 0
        return state

    def _rng(self) -> np.random.Generator:
        # seeded from numpy's global state, which nnU-Net's background workers seed individually
        if self.rng is None:
            self.rng = np.random.default_rng(np.random.randint(0, 2 ** 31))
        return self.rng

    def generate_train_batch(self):
        rng = self._rng()
        samples, domains, keys = [], [], []
        for _ in range(self.batch_size):
            d = int(rng.integers(len(self.domains)))
            dataset = self.domains[d][1]
            key = dataset.identifiers[int(rng.integers(len(dataset.identifiers)))]
            data, seg, _, _ = dataset.load_case(key)
            percentile = None
            if self.intensity is not None and self.training:
                percentile = draw_training_percentile(self.intensity, rng)
            sampler = self._case_sampler((d, key), data, seg)
            samples.append(sampler.sample(data, seg, rng, self.augmentation, percentile, self.box_probability))
            domains.append(d)
            keys.append(f"{self.domains[d][0]}/{key}")
        batch = {k: torch.from_numpy(np.stack([s[k] for s in samples]))
                 for k in ("data", "global", "box", "voxels_in_box")}
        if self.with_labels:
            batch["target"] = torch.from_numpy(np.stack([s["target"] for s in samples]).astype(np.int16))
            batch["global_target"] = torch.from_numpy(np.stack([s["global_target"] for s in samples])
                                                      .astype(np.int16))
        if self.view_transforms:
            labels = zip(batch["target"], batch["global_target"]) if self.with_labels else [None] * len(samples)
            views = [transform_views(self.view_transforms, [x, g], None if t is None else list(t))
                     for x, g, t in zip(batch["data"], batch["global"], labels)]
            batch["data"], batch["global"] = (torch.stack([v[i] for v in views]) for i in (0, 1))
        if self.student_transforms:
            views = [transform_views(self.student_transforms, [x, g]) for x, g in zip(batch["data"], batch["global"])]
            batch["student_data"], batch["student_global"] = (torch.stack([v[i] for v in views]) for i in (0, 1))
        batch["domain"] = torch.as_tensor(domains, dtype=torch.int64)
        batch["keys"] = keys
        return batch


class SourceTargetLoader(DataLoader):
    """One batch of labeled source samples and one of unlabeled target samples per call
    (``{'source': ..., 'target': ...}``; ``target`` is None without registered targets)."""

    def __init__(self, source: GlobalLocalDataLoader, target: Optional[GlobalLocalDataLoader]):
        super().__init__([source, target], source.batch_size, num_threads_in_multithreaded=1, seed_for_shuffle=None,
                         return_incomplete=True, shuffle=False, infinite=True)
        self.source, self.target = source, target

    def generate_train_batch(self):
        return {"source": self.source.generate_train_batch(),
                "target": self.target.generate_train_batch() if self.target is not None else None}


def single_dataset_loaders(name: str, folder: str, dataset_class, train_keys: Sequence[str],
                           val_keys: Sequence[str], batch_size: int, patch_size: Sequence[int],
                           intensity: Optional[dict], augmentation: GlobalLocalAugmentation,
                           student_intensity_augmentation: Optional[IntensityAugmentation] = None,
                           box_probability: float = 1.0) -> Tuple[GlobalLocalDataLoader, GlobalLocalDataLoader]:
    """Unlabeled training and validation loaders on one dataset's own cases (a target site: test-time UDA and
    federated clients); validation samples are unaugmented. Both draw local patches inside the foreground box with
    probability ``box_probability``."""
    train = GlobalLocalDataLoader([(name, dataset_class(folder, train_keys))], batch_size, patch_size, intensity,
                                  augmentation, with_labels=False,
                                  student_intensity_augmentation=student_intensity_augmentation,
                                  box_probability=box_probability)
    val = GlobalLocalDataLoader([(name, dataset_class(folder, val_keys))], batch_size, patch_size, intensity,
                                NO_AUGMENTATION, with_labels=False, training=False, box_probability=box_probability)
    return train, val
