"""GLC sliding-window inference (MAPSegNet and the GLC U-Net) against a plain reimplementation (one GLC forward call per window, the global view
built by hand), exact test-time mirroring, padding, and that the global context matters."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mapseg_nnunet.architectures import MAPSegNet
from mapseg_nnunet.inference.glc import flip_box, glc_sliding_window_logits
from test_glc_unet import tiny_glc_unet

PATCH = (16, 16, 16)


@pytest.fixture(scope="module", params=["MAPSegNet", "GLCUNet"])
def net(request):
    """Both networks of the GLC seam; the U-Net's fusion is moved off its identity start so that the global view
    matters."""
    torch.manual_seed(0)
    if request.param == "MAPSegNet":
        return MAPSegNet(1, 3, width=16, depth=2, encoder_groups=4, aspp_channels=16, aspp_dilations=(1, 2, 3),
                         head_channels=8, head_groups=4).eval()
    network = tiny_glc_unet(num_classes=3)
    with torch.no_grad():
        network.fusion.weight.normal_(0, 0.3)
    return network.eval()


def make_case(shape, margin=3, seed=0):
    """A case whose non-zero region (the foreground) leaves a zero margin, like a skull-stripped scan."""
    rng = np.random.default_rng(seed)
    case = np.zeros((1, *shape), dtype=np.float32)
    inner = tuple(slice(margin, s - margin) for s in shape)
    case[(0,) + inner] = rng.uniform(0.05, 1, [s - 2 * margin for s in shape])
    return torch.from_numpy(case)


def plain_glc(net, case, starts):
    """Uniformly averaged windows; global view = foreground box resized to the patch; box by the formula (not
    clipped to the view: where a window leaves the foreground box, its global context is empty)."""
    fg = [(m, s - m) for m, s in zip((3, 3, 3), case.shape[1:])]  # make_case's foreground
    crop = case[:, fg[0][0]:fg[0][1], fg[1][0]:fg[1][1], fg[2][0]:fg[2][1]]
    view = F.interpolate(crop[None], size=PATCH, mode="trilinear", align_corners=False)
    out = torch.zeros((3, *case.shape[1:]))
    count = torch.zeros(case.shape[1:])
    for start in starts:
        window = tuple(slice(s, s + p) for s, p in zip(start, PATCH))
        box = torch.tensor([[[(s - lo) * p / (hi - lo), (s + p - lo) * p / (hi - lo)]
                             for s, p, (lo, hi) in zip(start, PATCH, fg)]])
        with torch.no_grad():
            logits = net(case[(slice(None),) + window][None], view, box, with_aux=False)["logits"][0]
        out[(slice(None),) + window] += logits
        count[window] += 1
    return out / count


def test_glc_sliding_window_equals_plain_reimplementation(net):
    case = make_case((32, 24, 16))
    # nnU-Net's steps for step 0.5: x 0, 8, 16; y 0, 8; z 0
    starts = list(itertools.product((0, 8, 16), (0, 8), (0,)))
    expected = plain_glc(net, case, starts)
    got = glc_sliding_window_logits(net, case, PATCH, 3, tile_step_size=0.5, use_gaussian=False,
                                    outside_box_is_background=False)
    assert got.shape == (3, 32, 24, 16)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the default rule: windows inside the foreground box (make_case's 3-voxel margin), background outside it
    ruled = glc_sliding_window_logits(net, case, PATCH, 3, tile_step_size=0.5, use_gaussian=False)
    inside = (slice(3, 29), slice(3, 21), slice(3, 13))
    outside = torch.ones(case.shape[1:], dtype=torch.bool)
    outside[inside] = False
    assert (ruled.argmax(0)[outside] == 0).all() and (expected.argmax(0)[outside] != 0).any()
    assert torch.isfinite(ruled).all()


def test_global_context_changes_the_prediction(net):
    """GLC windows differ from nnU-Net's patch-only windows (the patch as its own context)."""
    case = make_case((32, 24, 16))
    glc = glc_sliding_window_logits(net, case, PATCH, 3, tile_step_size=0.5, use_gaussian=False)
    patch_only = torch.zeros_like(glc)
    count = torch.zeros(case.shape[1:])
    for start in itertools.product((0, 8, 16), (0, 8), (0,)):
        window = tuple(slice(s, s + p) for s, p in zip(start, PATCH))
        with torch.no_grad():
            patch_only[(slice(None),) + window] += net(case[(slice(None),) + window][None])[0]
        count[window] += 1
    assert (glc - patch_only / count).abs().max() > 1e-3


def test_mirroring_equals_prediction_on_flipped_cases(net):
    """Mirroring flips window, global view and box together: the mean of GLC predictions on the 8 flipped cases."""
    case = make_case((32, 24, 16), seed=1)
    mirrored = glc_sliding_window_logits(net, case, PATCH, 3, tile_step_size=0.5, use_gaussian=False,
                                         mirror_axes=(0, 1, 2))
    expected = 0
    combos = [c for k in range(4) for c in itertools.combinations((1, 2, 3), k)]
    for dims in combos:
        flipped = torch.flip(case, dims) if dims else case
        pred = glc_sliding_window_logits(net, flipped, PATCH, 3, tile_step_size=0.5, use_gaussian=False)
        expected = expected + (torch.flip(pred, dims) if dims else pred)
    torch.testing.assert_close(mirrored, expected / len(combos), atol=1e-5, rtol=1e-5)


def test_flip_box():
    box = torch.tensor([[[2.0, 10.0], [0.0, 16.0], [5.5, 7.0]]])
    torch.testing.assert_close(flip_box(box, (0, 2), PATCH), torch.tensor([[[6.0, 14.0], [0.0, 16.0], [9.0, 10.5]]]))


def test_case_smaller_than_the_patch_is_padded_and_cropped_back(net):
    case = make_case((20, 12, 16))
    got = glc_sliding_window_logits(net, case, PATCH, 3, tile_step_size=0.5, use_gaussian=True)
    assert got.shape == (3, 20, 12, 16) and torch.isfinite(got).all()


def test_windows_in_batches_equal_windows_one_at_a_time(net):
    """Windows predicted several at a time (one global map shared by the batch) give the one-at-a-time logits,
    mirroring and the Gaussian included, to float32 precision."""
    case = make_case((40, 24, 20), seed=2)
    single = glc_sliding_window_logits(net, case, PATCH, 3, tile_step_size=0.5, mirror_axes=(0, 2),
                                       windows_per_batch=1)
    for batch in (2, 5):
        batched = glc_sliding_window_logits(net, case, PATCH, 3, tile_step_size=0.5, mirror_axes=(0, 2),
                                            windows_per_batch=batch)
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
