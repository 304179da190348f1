"""Class-share alignment of the teacher's pseudo-labels (beyond the paper; the distribution alignment of
ReMixMatch, applied per case).

Self-training on a shifted target lets a minority class collapse: the student under-predicts it on masked views,
the EMA teacher follows, and its pseudo-labels then teach the student less of it (the demo's T2w CSF went
23.4 -> 2.0 Dice; benchmarks/results/FINDINGS.md). Anatomy changes less across sequences and sites than contrast
does, so the foreground class shares of the labeled source are a prior for the target's. With
``pseudo_labeling.alignment = "source_shares"`` the teacher's probabilities on a target sample are multiplied per
class by ``source share / teacher share`` (foreground classes; background keeps 1) before the argmax, where the
teacher share is its expected foreground class share on the sample's **global view** (the whole case, so one
sample's ratio does not depend on where its local patch lies; the local patch itself without GLC). Ratios are
clamped to ``[1 / max_ratio, max_ratio]`` so one step never flips a class the teacher is confident against.
The source shares are counted once from the source training labels (:func:`label_class_shares`).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch


def label_class_shares(dataset, identifiers: Sequence[str], num_classes: int, max_cases: int = 64) -> torch.Tensor:
    """Foreground class shares ``(num_classes - 1,)``, summing to 1, of the voxels labeled 1 .. num_classes - 1 in
    ``dataset`` (an nnU-Net dataset), over at most ``max_cases`` evenly spaced cases of ``identifiers``."""
    identifiers = list(identifiers)
    if not identifiers:
        raise ValueError("label_class_shares needs at least one labeled case")
    picked = [identifiers[i] for i in np.unique(np.linspace(0, len(identifiers) - 1,
                                                            min(max_cases, len(identifiers))).round().astype(int))]
    counts = np.zeros(num_classes, dtype=np.float64)
    for key in picked:
        seg = np.asarray(dataset.load_case(key)[1])
        counts += np.bincount(seg[seg > 0].astype(np.int64).ravel(), minlength=num_classes)[:num_classes]
    foreground = counts[1:]
    if foreground.sum() == 0:
        raise ValueError(f"label_class_shares: no foreground voxel in the {len(picked)} cases read "
                         f"({', '.join(picked[:3])}, ...)")
    return torch.as_tensor(foreground / foreground.sum(), dtype=torch.float32)


def foreground_shares(probabilities: torch.Tensor) -> torch.Tensor:
    """Expected foreground class shares per sample, ``(B, C - 1)``, of softmax ``probabilities`` ``(B, C, ...)``."""
    mass = probabilities[:, 1:].flatten(2).sum(2)
    return mass / mass.sum(1, keepdim=True).clamp_min(1e-8)


def class_ratios(source_shares: torch.Tensor, reference_logits: torch.Tensor, max_ratio: float) -> torch.Tensor:
    """Per-sample, per-class factors ``(B, C)``: 1 for background, ``source share / teacher share`` (clamped) for
    each foreground class, the teacher share taken on ``reference_logits`` (the sample's global view)."""
    teacher = foreground_shares(reference_logits.float().softmax(1))
    ratio = (source_shares.to(teacher) / teacher.clamp_min(1e-6)).clamp(1 / max_ratio, max_ratio)
    return torch.cat([torch.ones_like(ratio[:, :1]), ratio], 1)


def aligned_labels(logits: torch.Tensor, ratios: Optional[torch.Tensor]) -> torch.Tensor:
    """Hard labels ``(B, 1, ...)`` of ``logits`` after multiplying their probabilities by ``ratios`` ``(B, C)``
    (plain argmax when ``ratios`` is None)."""
    if ratios is None:
        return logits.argmax(1, keepdim=True)
    # argmax of p * r = argmax of log p + log r = argmax of logits + log r (softmax's normaliser is shared)
    shape = ratios.shape + (1,) * (logits.dim() - 2)
    return (logits.float() + ratios.log().view(shape)).argmax(1, keepdim=True)


def label_shares(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Foreground class shares ``(num_classes - 1,)`` of hard ``labels`` over the batch (zeros without foreground)."""
    counts = torch.bincount(labels.flatten(), minlength=num_classes)[1:num_classes].float()
    return counts / counts.sum().clamp_min(1)


# a foreground class whose share of an epoch's pseudo-labels falls below its share of the source labels divided by
# this is reported in the training log: the teacher hardly predicts it on the targets, and self-training can then
# lose it (benchmarks/results/FINDINGS.md: the T2w demo lost 21 and 39 CSF Dice points with CSF under-represented
# 3.9 and 6.8 times in its pseudo-labels; the three-target benchmark, at 1.6 times, did not)
VANISHING_FACTOR = 3.0


def vanishing_classes_warning(pseudo_label_shares: Sequence[float], source_shares: Sequence[float],
                              class_names: Dict[int, str], factor: float = VANISHING_FACTOR) -> Optional[str]:
    """A warning naming each foreground class (label value ``c`` = position ``c - 1`` of both share lists) whose
    share of the pseudo-labels is below ``source share / factor``; None when there is none."""
    low = [(c + 1, p, s) for c, (p, s) in enumerate(zip(pseudo_label_shares, source_shares)) if p < s / factor]
    if not low:
        return None
    listed = "; ".join(f"{class_names.get(label, label)} (label {label}) {100 * p:.1f} % of the foreground "
                       f"pseudo-labels against {100 * s:.1f} % of the source labels" for label, p, s in low)
    return (f"WARNING: the teacher hardly predicts {listed}. Self-training can lose such a class altogether; "
            f"pseudo_labeling.alignment = \"source_shares\" lifts it towards the source's share, where the anatomy's "
            f"proportions carry over to the target.")
