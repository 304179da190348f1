import numpy as np
import pytest

from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.intensity import (DEFAULT_INTENSITY, check_against_rules, describe_findings,
                                          draw_training_percentile, intensity_settings_for_channels, normalize_case,
                                          survey_case, survey_findings)
from mapseg_nnunet.data.synthetic import _case, zscored_brain_case


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


def test_plans_without_channel_rules_keep_their_clipping():
    """Plans written before per-channel rules (no ``channel_rules``) reproduce what their models were trained on."""
    settings = intensity_settings_for_channels(["CT", "T1"])
    assert settings["ct_channels"] == [0] and settings["channel_rules"] == ["ct_hu", "case_minimum"]
    settings.pop("channel_rules")
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


def brain_at_background(settings, image, brain):
    """Fraction of brain voxels that the normalisation maps to the background's value."""
    out = normalize_case(image[None], settings)[0]
    background = np.unique(out[~brain])
    assert background.size == 1  # the constant background stays one value
    return float((out[brain] == background[0]).mean())


@pytest.mark.parametrize("seed", range(3))
def test_zscored_constant_negative_background_keeps_every_brain_voxel(seed):
    """z-scored MRI with a constant negative background (the case's minimum): the old clipping put about half of
    the brain on the background value; the case_minimum rule puts none there, and the background is exactly 0."""
    image, _, brain = zscored_brain_case(np.random.default_rng(seed), background_mode="constant")
    assert image.min() < 0 and np.unique(image[~brain]).size == 1 and image[~brain][0] < 0
    legacy = dict(DEFAULT_INTENSITY)  # no channel_rules: negatives -> 0
    assert brain_at_background(legacy, image, brain) > 0.3
    settings = intensity_settings_for_channels(["FLAIR"])
    assert brain_at_background(settings, image, brain) == 0
    out = normalize_case(image[None], settings)[0]
    assert np.all(out[~brain] == 0) and out.max() == 1


def test_brain_only_zscoring_background_above_the_minimum_goes_to_zero():
    """Background 0 with darker brain voxels below it: the background (constant border value) is set to 0 and
    only the case's single darkest voxel shares that value."""
    image, _, brain = zscored_brain_case(np.random.default_rng(0), background_mode="zero")
    assert image[brain].min() < 0 == image[~brain].max()
    out = normalize_case(image[None], intensity_settings_for_channels(["T1c"]))[0]
    assert np.all(out[~brain] == 0)
    assert np.count_nonzero(out[brain] == 0) == np.count_nonzero(image[brain] == image.min()) == 1


@pytest.mark.parametrize("seed", range(3))
def test_non_negative_mri_is_normalised_exactly_as_before(seed):
    """The paper's path: on non-negative MRI with a zero background the case_minimum rule equals the old rule."""
    image, _ = _case(np.random.default_rng(seed), (30, 34, 28), 3)
    image = np.maximum(image, 0)[None]
    legacy = dict(DEFAULT_INTENSITY)
    new = intensity_settings_for_channels(["T1"])
    for p in (99.0, 99.5, 99.93):
        np.testing.assert_array_equal(normalize_case(image, new, p), normalize_case(image, legacy, p))


def test_ct_in_hu_keeps_tissue_and_drops_padding_below_air():
    settings = intensity_settings_for_channels(["CT"])
    image = np.full((1, 12, 12, 12), -3024.0, np.float32)  # scanner padding outside the field of view
    image[0, 1:11, 1:11, 1:11] = -1000.0  # air
    image[0, 3:9, 3:9, 3:9] = 40.0  # soft tissue
    out = normalize_case(image, settings)[0]
    assert out[0, 0, 0] == 0 and 0 < out[2, 2, 2] < out[5, 5, 5]


def test_survey_reports_zscored_channels_and_old_plans_refuse_them():
    image, _, _ = zscored_brain_case(np.random.default_rng(0))
    surveys = {"case000": survey_case(image[None], ["/data/case000_0000.nii.gz"]),
               "case001": survey_case((image - image.min())[None], ["/data/case001_0000.nii.gz"])}
    findings = survey_findings(["FLAIR"], surveys)
    assert findings[0]["cases_with_negative_values"] == 1 and findings[0]["cases_with_nonzero_background"] == 1
    assert "case000_0000.nii.gz" in findings[0]["example"]
    lines = describe_findings(findings, ["case_minimum"], "Dataset001 intensities")
    assert "negative values in 1 case(s)" in lines[0] and "case_minimum" in lines[0]
    check_against_rules(["case_minimum"], surveys, "MAPSegPlans")
    with pytest.raises(DatasetError, match="case000_0000.nii.gz: channel 0 has negative intensities"):
        check_against_rules(["clip_negatives"], surveys, "OldPlans")


def test_planning_reads_each_source_image_once(tmp_path):
    """The image check surveys as it reads; the planner's survey then reads only cases changed since."""
    import os

    import SimpleITK as sitk
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from mapseg_nnunet.data.input_checks import check_dataset_images
    from mapseg_nnunet.data.intensity import survey_and_remember, survey_dataset

    class CountingReader(SimpleITKIO):
        reads = []

        def read_images(self, files, *args, **kwargs):
            self.reads.append(tuple(files))
            return super().read_images(files, *args, **kwargs)

    dataset = {}
    for i in range(2):
        path = str(tmp_path / f"case{i}_0000.nii.gz")
        sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(i).normal(size=(6, 6, 6)).astype(np.float32)),
                        path)
        dataset[f"case{i}"] = {"images": [path]}
    reader = CountingReader()
    checked = check_dataset_images(dataset, 1, reader, progress=False, survey=survey_and_remember)
    assert len(reader.reads) == 2
    assert survey_dataset(dataset, reader) == checked and len(reader.reads) == 2  # nothing read again
    changed = dataset["case1"]["images"][0]
    sitk.WriteImage(sitk.GetImageFromArray(np.full((6, 6, 6), -3.0, dtype=np.float32)), changed)
    os.utime(changed, ns=(os.stat(changed).st_atime_ns, os.stat(changed).st_mtime_ns + 10 ** 9))
    surveys = survey_dataset(dataset, reader)
    assert reader.reads[2:] == [(changed,)] and surveys["case1"][0][0] == -3.0  # a changed file is read again
