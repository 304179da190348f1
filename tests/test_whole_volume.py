"""Whole-volume scans (issue #33): a small object in a large field of view whose background is one constant
(z-scored MRI as distributed). Local patches also come from outside the foreground box (nnU-Net's random patches);
outside the box every prediction is background, the same rule in nnUNetv2_predict, the GLC sliding window and the
teacher's pseudo-labels. Unit tests here; the trained end-to-end comparison with stock nnU-Net is in
``test_whole_volume_training.py``."""
import numpy as np
import pytest
import torch

from mapseg_nnunet.data.foreground_box import (box_in_global_view, case_foreground_box,
                                               labels_outside_box_to_background, logits_outside_box_to_background_,
                                               outside_box_mask, patch_voxels_in_box, sample_local_start)
from mapseg_nnunet.data.global_local import GlobalLocalDataLoader
from mapseg_nnunet.data.intensity import intensity_settings_for_channels, normalize_case
from mapseg_nnunet.data.sample_geometry import NO_AUGMENTATION, GlobalLocalAugmentation
from mapseg_nnunet.data.synthetic import whole_volume_case

PATCH = (24, 24, 24)


def window_meets_box(start, patch, box) -> bool:
    """Whether a window starting at ``start`` shares any voxel with ``box``."""
    return all(s < hi and s + p > lo for s, p, (lo, hi) in zip(start, patch, box))


@pytest.fixture(scope="module")
def case():
    image, label, box = whole_volume_case(np.random.default_rng(3), field=(80, 72, 76), object_shape=(28, 30, 26))
    return image, label, box


def test_the_synthetic_case_is_a_small_object_on_a_constant_background(case):
    image, label, box = case
    assert np.unique(image[label == 0]).size == 1 and image[label == 0][0] < image[label > 0].min()
    np.testing.assert_array_equal(case_foreground_box(image[None]), box)
    assert np.prod(box[:, 1] - box[:, 0]) < 0.1 * image.size


def test_local_patches_come_from_inside_the_box_with_the_given_probability_and_from_anywhere_otherwise(case):
    image, _, box = case
    shape, rng = image.shape, np.random.default_rng(0)
    inside = lambda s: all(box[a, 0] <= s[a] and s[a] + PATCH[a] <= box[a, 1] for a in range(3))  # noqa: E731
    outside = lambda s: not window_meets_box(s, PATCH, box)  # noqa: E731
    starts = [sample_local_start(box, PATCH, shape, rng, 1.0) for _ in range(200)]
    assert all(inside(s) for s in starts)
    starts = [sample_local_start(box, PATCH, shape, rng, 0.0) for _ in range(400)]
    assert all(0 <= s[a] <= shape[a] - PATCH[a] for s in starts for a in range(3))
    assert sum(outside(s) for s in starts) > 100  # most of this case is background
    for a in range(3):  # uniform over the whole case: both ends are reached
        assert min(s[a] for s in starts) <= 2 and max(s[a] for s in starts) >= shape[a] - PATCH[a] - 2
    starts = [sample_local_start(box, PATCH, shape, rng, 0.33) for _ in range(600)]
    share = np.mean([inside(s) for s in starts])
    assert 0.25 < share < 0.5  # 0.33 drawn inside, plus random ones that happen to fall inside


def test_a_probability_of_one_draws_exactly_the_inside_the_box_rule(case):
    """The choice is not drawn at probability 1: the random stream is the one of the rule before whole volumes."""
    _, _, box = case
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(20):
        np.testing.assert_array_equal(sample_local_start(box, PATCH, (80, 72, 76), a, 1.0),
                                      sample_local_start(box, PATCH, (80, 72, 76), b))


def test_voxels_in_box_and_the_outside_mask_match_a_voxelwise_check():
    rng = np.random.default_rng(1)
    shape = np.array([50, 44, 60])
    for _ in range(25):
        lo = rng.integers(0, shape - 5)
        box = np.stack([lo, lo + rng.integers(1, shape - lo + 1)], 1)
        start = rng.integers(0, shape - np.array(PATCH) + 1)
        ranges = patch_voxels_in_box(start, PATCH, box)
        grid = np.stack(np.meshgrid(*[np.arange(p) + s for p, s in zip(PATCH, start)], indexing="ij"))
        expected = ~np.all((grid >= box[:, 0, None, None, None]) & (grid < box[:, 1, None, None, None]), axis=0)
        mask = outside_box_mask(torch.from_numpy(ranges)[None], PATCH)
        assert mask.shape == (1, 1, *PATCH)
        np.testing.assert_array_equal(mask[0, 0].numpy(), expected)
        assert window_meets_box(start, PATCH, box) == (not expected.all())


def test_outside_the_box_labels_and_logits_become_background():
    ranges = torch.tensor([[[2, 10], [0, 24], [5, 24]], [[0, 0], [0, 24], [0, 24]]])  # the 2nd: wholly outside
    outside = outside_box_mask(ranges, PATCH)
    labels = torch.randint(1, 3, (2, 1, *PATCH))
    relabelled = labels_outside_box_to_background(labels, ranges)
    assert (relabelled[outside] == 0).all() and torch.equal(relabelled[~outside], labels[~outside])
    assert (relabelled[1] == 0).all()
    for dtype in (torch.float32, torch.float16):
        logits = torch.randn(2, 3, *PATCH).to(dtype)
        before = logits.clone()
        logits_outside_box_to_background_(logits, ranges)
        probabilities = logits.float().softmax(1)
        assert torch.all(probabilities[:, 0][outside[:, 0]] == 1)
        inside = ~outside[:, 0]
        assert torch.equal(logits.permute(1, 0, 2, 3, 4)[:, inside], before.permute(1, 0, 2, 3, 4)[:, inside])
    regions = torch.randn(2, 2, *PATCH)
    logits_outside_box_to_background_(regions, ranges, regions=True)
    assert torch.all(regions.sigmoid().permute(1, 0, 2, 3, 4)[:, outside[:, 0]] < 1e-6)


class _Cases:
    def __init__(self, image, label):
        self.identifiers = ["case0"]
        self.image, self.label = image[None], label[None].astype(np.int16)

    def load_case(self, key):
        return self.image, self.label, None, {}


@pytest.mark.parametrize("augmentation", [NO_AUGMENTATION, GlobalLocalAugmentation(affine_probability=1.0)])
def test_loader_batches_record_which_patch_voxels_lie_in_the_box(case, augmentation):
    """Every voxel of a local patch outside ``voxels_in_box`` holds the normalised background (0); the patches
    reach the background; the global view is the box in every sample."""
    image, label, box = case
    settings = intensity_settings_for_channels(["MRI"])
    np.random.seed(0)
    loader = GlobalLocalDataLoader([("whole", _Cases(image, label))], 4, PATCH, settings, augmentation,
                                   with_labels=True, box_probability=0.33)
    wholly_outside = 0
    for _ in range(15):
        batch = loader.generate_train_batch()
        ranges = batch["voxels_in_box"]
        outside = outside_box_mask(ranges, PATCH)
        if augmentation is not NO_AUGMENTATION:  # the hull's box is within a voxel, trilinear blends one more
            ranges = torch.stack([(ranges[..., 0] - 2).clamp_min(0), ranges[..., 1] + 2], -1)
        far_outside = outside_box_mask(ranges, PATCH)
        assert (batch["data"][far_outside] == 0).all() and (batch["target"][far_outside] <= 0).all()
        wholly_outside += int(outside.flatten(1).all(1).sum())
    assert wholly_outside > 0
    whole = normalize_case(image[None], settings)
    np.testing.assert_array_equal(case_foreground_box(whole), box)


def test_glc_prediction_keeps_its_windows_in_the_box_and_is_background_outside(case):
    """With the rule the windows stay inside the foreground box (as the training patches), at nnU-Net's steps over
    the box; every voxel outside the box is background and none is left without a prediction."""
    from mapseg_nnunet.architectures.mapseg_net import MAPSegNet
    from mapseg_nnunet.inference.glc import glc_sliding_window_logits, window_starts_in_box
    from mapseg_nnunet.planning.presets import PRESETS
    image, _, box = case
    starts = window_starts_in_box(image.shape, PATCH, box, 0.5)
    assert all(box[a, 0] <= s[a] and s[a] + PATCH[a] <= box[a, 1] for s in starts for a in range(3))
    covered = np.zeros(image.shape, bool)
    for s in starts:
        covered[tuple(slice(a, a + p) for a, p in zip(s, PATCH))] = True
    inside = np.zeros(image.shape, bool)
    inside[tuple(slice(lo, hi) for lo, hi in box)] = True
    assert np.array_equal(covered, inside)
    small = np.array([[10, 20], [0, 72], [60, 70]])  # narrower than the patch: centred, clipped to the case
    assert {s[0] for s in window_starts_in_box(image.shape, PATCH, small, 0.5)} == {3}
    assert {s[2] for s in window_starts_in_box(image.shape, PATCH, small, 0.5)} == {52}
    torch.manual_seed(0)
    net = MAPSegNet(1, 3, **PRESETS["cpu"].arch_kwargs()).eval()
    normalised = torch.from_numpy(normalize_case(image[None], intensity_settings_for_channels(["MRI"])))
    calls, fuse = [], net.fuse_and_decode
    net.fuse_and_decode = lambda *args: (calls.extend([1] * args[0].shape[0]), fuse(*args))[1]  # one row per window
    ruled = glc_sliding_window_logits(net, normalised, PATCH, 3, 0.5, True)
    assert len(calls) == len(starts)
    assert (ruled.argmax(0).numpy()[~inside] == 0).all() and not torch.isnan(ruled).any()
    calls.clear()
    glc_sliding_window_logits(net, normalised, PATCH, 3, 0.5, True, outside_box_is_background=False)
    assert len(calls) > 4 * len(starts)  # the whole case's windows


def test_pseudo_labels_are_background_outside_the_box():
    from mapseg_nnunet.method.losses import pseudo_labels

    class AlwaysClassOne(torch.nn.Module):
        def forward(self, x, g=None, boxes=None, with_aux=True):
            logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
            logits[:, 1] = 5
            return {"logits": logits, "aux_logits": logits.clone()} if g is not None else logits

    ranges = torch.tensor([[[4, 24], [0, 24], [0, 12]], [[0, 0], [0, 24], [0, 24]]])
    batch = {"data": torch.zeros(2, 1, *PATCH), "global": torch.zeros(2, 1, *PATCH),
             "box": torch.tensor(np.stack([box_in_global_view((0, 0, 0), PATCH, np.array([[0, 24]] * 3))] * 2)),
             "voxels_in_box": ranges}
    local, global_, _ = pseudo_labels(AlwaysClassOne(), batch, use_glc=True)
    outside = outside_box_mask(ranges, PATCH)
    assert (local[outside] == 0).all() and (local[~outside] == 1).all()
    assert (global_ == 1).all()  # the global view is the box itself
    local_off, _, _ = pseudo_labels(AlwaysClassOne(), batch, use_glc=True, outside_box_is_background=False)
    assert (local_off == 1).all()
