import numpy as np
import pytest
import torch
from scipy import ndimage

from mapseg_nnunet.data.case_sampler import global_local_sample
from mapseg_nnunet.data.global_local import GlobalLocalDataLoader
from mapseg_nnunet.data.sample_geometry import NO_AUGMENTATION, GlobalLocalAugmentation
from mapseg_nnunet.method.masking import mask_volume, masked_mse, random_cube_mask

PATCH = (24, 24, 24)


def coordinate_case(shape=(40, 52, 36), offset=10.0):
    """3 channels holding the (x, y, z) voxel coordinates (+ offset, so that padding 0 is recognisable)."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")) + offset
    seg = np.zeros((1, *shape), np.int16)
    seg[:, :2] = -1  # outside nnU-Net's non-zero mask
    return grid, seg


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("aug", [NO_AUGMENTATION, GlobalLocalAugmentation(affine_probability=1.0)])
def test_box_is_exact_under_augmentation(seed, aug):
    """Where the global view lies inside the box, it must equal the local patch interpolated at the position the
    box implies: both sample the same augmented volume (exact for coordinate-valued, i.e. linear, volumes)."""
    image, seg = coordinate_case()
    s = global_local_sample(image, seg, PATCH, aug, np.random.default_rng(seed))
    x, g, box = s["data"], s["global"], s["box"]
    assert x.shape == g.shape == (3, *PATCH)
    checked = 0
    for u in np.ndindex(*PATCH):
        centre = np.array(u) + 0.5
        if np.any(centre < box[:, 0] + 1) or np.any(centre > box[:, 1] - 1):
            continue
        j = (centre - box[:, 0]) * np.array(PATCH) / (box[:, 1] - box[:, 0]) - 0.5
        neighbours = x[:, int(np.floor(j[0])):int(np.floor(j[0])) + 2, int(np.floor(j[1])):int(np.floor(j[1])) + 2,
                       int(np.floor(j[2])):int(np.floor(j[2])) + 2]
        if neighbours.min() < 5 or g[:, u[0], u[1], u[2]].min() < 5:
            continue  # padding from outside the case: not a linear field there
        expected = [ndimage.map_coordinates(x[c], j[:, None], order=1)[0] for c in range(3)]
        np.testing.assert_allclose(g[:, u[0], u[1], u[2]], expected, atol=2e-3)
        checked += 1
    assert checked > 50


def test_global_view_is_the_foreground_box_resized():
    image, seg = coordinate_case()
    s = global_local_sample(image, seg, PATCH, NO_AUGMENTATION, np.random.default_rng(0))
    # foreground along x starts at 2 (seg -1 before): the global view spans x coordinates 2..39 (+ offset)
    assert s["global"][0].min() == pytest.approx(10 + 2 + (38 / 24) * 0.5 - 0.5, abs=1e-3)
    assert s["global"][0].max() == pytest.approx(10 + 39 - (38 / 24) * 0.5 + 0.5, abs=1e-3)
    assert s["target"].shape == s["global_target"].shape == (1, *PATCH)
    assert s["global_target"].min() == 0  # resized from the foreground box only


def test_small_case_is_padded_and_centred():
    image = np.ones((1, 10, 30, 20), np.float32)
    s = global_local_sample(image, None, PATCH, NO_AUGMENTATION, np.random.default_rng(0))
    assert s["data"].shape == (1, *PATCH) and s["global"].min() == 1
    assert s["data"].sum() == 10 * 24 * 20


class _Cases:
    def __init__(self, n, value):
        self.identifiers = [f"c{i}" for i in range(n)]
        self.value = value

    def load_case(self, key):
        img = np.full((1, 30, 30, 30), self.value, np.float32)
        return img, np.zeros((1, 30, 30, 30), np.int8), None, {}


def test_loader_is_domain_balanced_and_batches():
    np.random.seed(0)  # the loader seeds itself from numpy's global state, as nnU-Net's workers do
    loader = GlobalLocalDataLoader([("source", _Cases(20, 1.0)), ("target", _Cases(2, 2.0))], 4, PATCH, None,
                                   NO_AUGMENTATION, with_labels=True)
    domains = torch.cat([loader.generate_train_batch()["domain"] for _ in range(100)])
    assert abs(domains.float().mean().item() - 0.5) < 0.075  # 3 sigma of 400 draws  # half the samples from the 2-case domain
    batch = loader.generate_train_batch()
    assert batch["data"].shape == batch["global"].shape == (4, 1, *PATCH) and batch["box"].shape == (4, 3, 2)
    assert batch["target"].shape == (4, 1, *PATCH) and len(batch["keys"]) == 4
    values = batch["data"].flatten(1).max(1).values
    assert torch.equal(values, batch["domain"].float() + 1)


def test_cube_mask_ratio_structure_and_independence():
    g = torch.Generator().manual_seed(0)
    mask = random_cube_mask(3, (48, 48, 48), 8, 0.7, generator=g)
    cubes = mask[:, 0].unfold(1, 8, 8).unfold(2, 8, 8).unfold(3, 8, 8)  # (B, 6, 6, 6, 8, 8, 8)
    assert torch.all(cubes.amin((-1, -2, -3)) == cubes.amax((-1, -2, -3)))  # constant within each cube
    assert torch.all(cubes.amax((-1, -2, -3)).sum((1, 2, 3)) == round(216 * 0.7))
    assert not torch.equal(mask[0], mask[1])
    with pytest.raises(ValueError):
        random_cube_mask(1, (44, 48, 48), 8, 0.7)


def test_mask_volume_and_masked_mse():
    x = torch.rand(2, 1, 16, 16, 16) + 1
    masked, mask = mask_volume(x, 4, 0.5)
    assert torch.all(masked[mask.bool()] == 0) and torch.equal(masked[~mask.bool()], x[~mask.bool()])
    prediction = x.clone()
    prediction[~mask.bool()] += 100  # errors outside the mask do not count
    assert masked_mse(prediction, x, mask).item() == 0
    prediction = x + mask * 0.5
    assert masked_mse(prediction, x, mask).item() == pytest.approx(0.25)


@pytest.mark.parametrize("background_mode", ["constant", "zero"])
def test_training_and_prediction_agree_on_the_foreground_box_with_a_non_zero_background(background_mode):
    """z-scored case: nnU-Net's crop to non-zero crops nothing (seg >= 0 everywhere), yet training's sampler and
    the GLC predictor both take the brain's box (not the whole volume) for the global view."""
    from mapseg_nnunet.data.intensity import intensity_settings_for_channels, normalize_case
    from mapseg_nnunet.data.synthetic import zscored_brain_case
    from mapseg_nnunet.inference.glc import global_view
    raw, _, brain = zscored_brain_case(np.random.default_rng(3), shape=(44, 50, 38), background_mode=background_mode)
    assert np.all(raw != 0) or background_mode == "zero"
    normalised = normalize_case(raw[None], intensity_settings_for_channels(["FLAIR"]))
    seg = np.zeros((1, *raw.shape), np.int16)  # what nnU-Net's preprocessing leaves for a non-zero background
    training = global_local_sample(normalised, seg, PATCH, NO_AUGMENTATION, np.random.default_rng(0))["foreground"]
    _, prediction = global_view(torch.from_numpy(normalised), PATCH)
    hits = [np.nonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3)]
    expected = np.array([[h[0], h[-1] + 1] for h in hits])
    np.testing.assert_array_equal(training, expected)
    np.testing.assert_array_equal(prediction, expected)
    assert np.any(expected[:, 1] - expected[:, 0] < np.array(raw.shape))


class _RecordingArray:
    """A case array that records the voxels each read touches (what a lazily read blosc2 case decompresses)."""

    def __init__(self, array):
        self.array, self.shape, self.reads = array, array.shape, []

    def __array__(self, dtype=None, copy=None):
        self.reads.append(int(np.prod(self.shape[1:])))
        return self.array if dtype is None else self.array.astype(dtype)

    def __getitem__(self, index):
        out = self.array[index]
        self.reads.append(int(np.prod(out.shape[1:])))
        return out


@pytest.mark.parametrize("aug", [NO_AUGMENTATION, GlobalLocalAugmentation(), GlobalLocalAugmentation(1.0)])
def test_samples_after_the_first_visit_read_only_the_patch_region(aug):
    """Sampling cost follows the patch: after the case's first visit, a sample reads the local patch's region of
    the case (at most the patch grown by the largest scale and rotation), never the whole case."""
    from mapseg_nnunet.data.case_sampler import CaseSampler
    from mapseg_nnunet.data.intensity import intensity_settings_for_channels
    from mapseg_nnunet.data.synthetic import zscored_brain_case
    image, label, _ = zscored_brain_case(np.random.default_rng(0), (96, 100, 80))
    data, seg = _RecordingArray(image[None]), _RecordingArray(label[None].astype(np.int8))
    sampler = CaseSampler(data, seg, PATCH, intensity_settings_for_channels(["FLAIR"]), with_labels=True)
    assert data.reads == [96 * 100 * 80]  # the one pass over the whole case
    rng = np.random.default_rng(1)
    bound = int(np.ceil(max(PATCH) * max(aug.scale_range) * np.sqrt(3))) + 3
    for _ in range(12):
        data.reads.clear()
        s = sampler.sample(data, seg, rng, aug, 99.5)
        assert len(data.reads) == 1 and data.reads[0] <= bound ** 3 < 96 * 100 * 80
        assert s["data"].shape == s["global"].shape == (1, *PATCH) and s["global_target"].shape == (1, *PATCH)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("aug", [NO_AUGMENTATION, GlobalLocalAugmentation(affine_probability=0.0)])
def test_cached_sampling_equals_normalising_and_resizing_the_whole_case(seed, aug):
    """Without an affine (unaugmented, flipped) a sample equals the whole-case computation: normalise the whole
    case (jittered percentile), mirror and pad it, crop the patch, resize the foreground box (nnU-Net's resize)."""
    from mapseg_nnunet.data.case_sampler import CaseSampler
    from mapseg_nnunet.data.foreground_box import case_foreground_box, sample_local_start
    from mapseg_nnunet.data.intensity import intensity_settings_for_channels, normalize_case
    from mapseg_nnunet.data.synthetic import zscored_brain_case
    rng = np.random.default_rng(seed)
    image, label, _ = zscored_brain_case(rng, (40, 30, 22) if seed % 2 else (44, 50, 38))  # 30, 22 < 24: padded
    image, seg = image[None], label[None].astype(np.int16)
    settings = intensity_settings_for_channels(["FLAIR"])
    percentile = float(rng.uniform(99, 100))
    s = CaseSampler(image, seg, PATCH, settings, with_labels=True).sample(image, seg, np.random.default_rng(seed), aug,
                                                                          percentile)
    # reference: the same draws on whole arrays
    draws = np.random.default_rng(seed)
    assert draws.random() >= aug.affine_probability  # no affine
    flips = [aug.flip_probability > 0 and draws.random() < aug.flip_probability for _ in range(3)]
    whole, whole_seg = normalize_case(image, settings, percentile), seg
    for axis in range(3):
        if flips[axis]:
            whole, whole_seg = np.flip(whole, axis + 1), np.flip(whole_seg, axis + 1)
    missing = [max(0, p - n) for p, n in zip(PATCH, image.shape[1:])]
    pad = [(0, 0)] + [(m // 2, m - m // 2) for m in missing]
    whole, whole_seg = np.pad(whole, pad), np.pad(whole_seg, pad, constant_values=-1)
    box = case_foreground_box(whole, whole_seg)
    np.testing.assert_array_equal(s["foreground"], box)
    start = sample_local_start(box, PATCH, whole.shape[1:], draws)
    local = (slice(None),) + tuple(slice(a, a + p) for a, p in zip(start, PATCH))
    np.testing.assert_allclose(s["data"], whole[local], atol=1e-6)
    np.testing.assert_array_equal(s["target"], whole_seg[local])
    crop = (slice(None),) + tuple(slice(lo, hi) for lo, hi in box)
    resized = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(whole[crop]))[None], PATCH,
                                              mode="trilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(s["global"], resized, atol=1e-5)
    nearest = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(whole_seg[crop])).float()[None],
                                              PATCH, mode="nearest")[0].numpy()
    np.testing.assert_array_equal(s["global_target"], nearest)


def test_case_statistics_give_numpys_percentiles():
    from mapseg_nnunet.data.intensity import CaseIntensity, intensity_settings_for_channels
    from mapseg_nnunet.data.synthetic import zscored_brain_case
    image, _, _ = zscored_brain_case(np.random.default_rng(0), (30, 34, 26))
    stats = CaseIntensity(image[None], intensity_settings_for_channels(["FLAIR"]))
    for p in (99.0, 99.31, 99.5, 99.97, 100.0):
        assert stats.percentile(0, p) == pytest.approx(float(np.percentile(image, p)), rel=1e-6)


def test_loader_keeps_case_samplers_within_its_memory_budget():
    np.random.seed(0)
    loader = GlobalLocalDataLoader([("source", _Cases(6, 1.0))], 2, PATCH, None, NO_AUGMENTATION, with_labels=True,
                                   cache_bytes=1)
    for _ in range(5):
        loader.generate_train_batch()
    assert len(loader._cases) == 1  # over budget: only the most recent case stays
    loader = GlobalLocalDataLoader([("source", _Cases(6, 1.0))], 2, PATCH, None, NO_AUGMENTATION, with_labels=True)
    for _ in range(20):
        loader.generate_train_batch()
    assert len(loader._cases) == 6
    import pickle
    assert len(pickle.loads(pickle.dumps(loader))._cases) == 0  # background workers start empty
