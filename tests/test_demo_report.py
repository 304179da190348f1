"""make demo's report: Dice tables from nnU-Net's evaluation files, and the paired per-case difference of the last
model against the first with its bootstrap interval."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk


def _evaluated_folder(root, name, predictions, references):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder_simple
    folder = root / name
    folder.mkdir(parents=True)
    for i, prediction in enumerate(predictions):
        sitk.WriteImage(sitk.GetImageFromArray(prediction.astype(np.uint8)), str(folder / f"case{i:02d}.nii.gz"))
    json.dump({"labels": {"background": 0, "CSF": 1, "GM": 2, "WM": 3}}, open(folder / "dataset.json", "w"))
    compute_metrics_on_folder_simple(str(references), str(folder), [1, 2, 3], num_processes=1)
    return str(folder)


def test_paired_difference_is_per_case_and_its_interval_is_above_zero_when_every_case_improves(tmp_path):
    from mapseg_nnunet.cli.demo_report import case_dice, paired_difference, report
    rng = np.random.default_rng(0)
    references = tmp_path / "labels"
    references.mkdir()
    truth = [rng.integers(0, 4, (8, 8, 8)) for _ in range(12)]
    for i, t in enumerate(truth):
        sitk.WriteImage(sitk.GetImageFromArray(t.astype(np.uint8)), str(references / f"case{i:02d}.nii.gz"))

    def corrupted(share):  # each case with about ``share`` of its voxels relabelled at random
        return [np.where(rng.random(t.shape) < share, rng.integers(0, 4, t.shape), t) for t in truth]

    first = _evaluated_folder(tmp_path / "predictions" / "baseline", "Dataset952_T2w", corrupted(0.6), references)
    last = _evaluated_folder(tmp_path / "predictions" / "uda", "Dataset952_T2w", corrupted(0.2), references)
    a, b = case_dice(first), case_dice(last)
    assert sorted(a) == [f"case{i:02d}.nii.gz" for i in range(12)]
    paired = paired_difference(first, last)
    assert np.isclose(paired["mean"], np.mean([b[c] - a[c] for c in a]), atol=1e-9) and paired["n"] == 12
    assert paired["ci95"][0] > 0 and paired["verdict"] == "better"
    assert paired_difference(last, first)["verdict"] == "worse"
    text = report(str(tmp_path / "predictions"), ["baseline", "uda"])
    lo, hi = paired["ci95"]
    assert f"paired per case: {paired['mean']:+.1f} Dice, 95 % interval [{lo:+.1f}, {hi:+.1f}] over 12 cases: " \
           f"better" in text
    os.remove(os.path.join(last, "case03.nii.gz"))  # a case the other model lacks is named, not skipped
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder_simple
    compute_metrics_on_folder_simple(str(references), last, [1, 2, 3], num_processes=1, chill=True)
    with pytest.raises(ValueError, match="case03.nii.gz"):
        paired_difference(first, last)
