import numpy as np
import pytest

from mapseg_nnunet.data.intensity import (DEFAULT_INTENSITY, draw_training_percentile, intensity_settings_for_channels,
                                     normalize_case)


def test_background_zero_range_and_percentile_clip():
    rng = np.random.default_rng(0)
    image = np.zeros((1, 20, 20, 20), np.float32)
    image[0, 5:15, 5:15, 5:15] = rng.uniform(10, 500, (10, 10, 10))
    out = normalize_case(image, DEFAULT_INTENSITY)
    assert out[0, 0, 0, 0] == 0 and out.min() == 0 and out.max() == 1
    p = np.percentile(image[0], 99.5)
    inside = image[0] < p
    np.testing.assert_allclose(out[0][inside], image[0][inside] / p, rtol=1e-5)
    assert np.all(out[0][image[0] >= p] == 1)


def test_negatives_clipped_and_ct_shifted():
    settings = intensity_settings_for_channels(["CT", "T1"])
    assert settings["ct_channels"] == [0]
    image = np.full((2, 4, 4, 4), -1024.0, np.float32)
    image[:, 1:3, 1:3, 1:3] = 200.0  # CT: -1024 HU air -> 0 after the shift; MRI: negatives -> 0
    image[1, 0, 0, 0] = -5
    out = normalize_case(image, settings)
    assert out[0, 0, 0, 0] == 0 and out[1, 0, 0, 0] == 0
    assert np.all(out[:, 1:3, 1:3, 1:3] == 1)


def test_stock_plans_pass_through():
    image = np.random.default_rng(0).normal(size=(1, 4, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(normalize_case(image, None), image)


def test_training_percentile_jitter_distribution():
    rng = np.random.default_rng(0)
    draws = np.array([draw_training_percentile(DEFAULT_INTENSITY, rng) for _ in range(4000)])
    jittered = draws != 99.5
    assert abs(jittered.mean() - 0.35) < 0.03
    assert draws[jittered].min() >= 99 and draws[jittered].max() <= 100


def test_unknown_scheme_rejected():
    with pytest.raises(ValueError, match="scheme"):
        normalize_case(np.zeros((1, 2, 2, 2)), {"scheme": "zscore"})
