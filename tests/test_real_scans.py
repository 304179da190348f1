"""Scans as users have them (issue #20): z-scored MRI with a constant negative background in LPS NIfTI files at
1 mm and anisotropic spacing, corrupt files, a labeled cohort smaller than nnU-Net's 5 folds. Every dataset is
built here (no third-party scans); volumes are tiny."""
import json
import os

import numpy as np
import pytest
import torch
from nnunet_fixtures import nnunet_env, run, with_ext_trainer

from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.synthetic import write_zscored_dataset


def truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


@pytest.fixture(scope="module")
def zscored_source(tmp_path_factory):
    """Dataset 931: 3 labeled z-scored FLAIR cases (constant negative background, LPS, 1 x 1 x 3 mm) planned with
    MAPSegPlannerCPU."""
    root = tmp_path_factory.mktemp("zscored")
    env = with_ext_trainer(nnunet_env(root))
    write_zscored_dataset(env["nnUNet_raw"], 931, "ZSource", num_cases=3, shape=(40, 44, 34), spacing=(1, 1, 3))
    out = run(["mapseg_plan_and_preprocess", "-d", "931", "-pl", "MAPSegPlannerCPU", "-np", "1", "-npfp", "1",
               "--no_pbar"], env, cwd=root)
    return root, env, out.stdout


def test_planning_detects_zscored_input_and_records_the_rule(zscored_source):
    root, env, stdout = zscored_source
    plans = json.load(open(os.path.join(env["nnUNet_preprocessed"], "Dataset931_ZSource", "MAPSegPlansCPU.json")))
    intensity = plans["configurations"]["3d_fullres"]["mapseg"]["intensity"]
    assert intensity["channel_rules"] == ["case_minimum"]
    found = intensity["found_in_data"][0]
    assert found["channel"] == "FLAIR" and found["cases"] == 3
    assert found["cases_with_negative_values"] == 3 and found["cases_with_nonzero_background"] == 3
    assert "negative values in 3 case(s)" in stdout and "case_minimum" in stdout
    # what planning prints is what it saved: no 2D configuration, batch Dice on
    assert "2D U-Net configuration" not in stdout
    assert "3D fullres configuration" in stdout and "'batch_dice': True" in stdout
    assert plans["configurations"]["3d_fullres"]["batch_dice"] is True


def test_registering_a_zscored_target_says_what_it_found(zscored_source):
    root, env, _ = zscored_source
    write_zscored_dataset(env["nnUNet_raw"], 932, "ZTarget", num_cases=2, shape=(40, 44, 100), seed=5,
                          labeled=False, channel_name="FLAIR")
    out = run(["mapseg_register_targets", "-s", "931", "-t", "932", "-p", "MAPSegPlansCPU", "--no_pbar"], env,
              cwd=root)
    assert "Dataset932_ZTarget intensities: channel 'FLAIR' (2 cases): negative values in 2 case(s)" in out.stdout
    registry = json.load(open(os.path.join(env["nnUNet_preprocessed"], "Dataset931_ZSource", "mapseg_targets.json")))
    entry = [t for t in registry["targets"] if t["dataset_name"] == "Dataset932_ZTarget"][0]
    assert entry["intensities_found"][0]["cases_with_negative_values"] == 2


def test_truncated_image_is_named_by_registration_and_planning(zscored_source):
    root, env, _ = zscored_source
    folder = write_zscored_dataset(env["nnUNet_raw"], 933, "Truncated", num_cases=2, shape=(40, 44, 34), seed=6,
                                   labeled=False)
    bad = os.path.join(folder, "imagesTr", "case001_0000.nii.gz")
    truncate(bad)
    out = run(["mapseg_register_targets", "-s", "931", "-t", "933", "-p", "MAPSegPlansCPU", "--no_pbar"], env,
              cwd=root, check=False)
    assert out.returncode != 0 and f"{bad}: cannot read the image (EOFError" in out.stderr
    assert "truncated" in out.stderr and "Traceback" not in out.stderr
    source = write_zscored_dataset(env["nnUNet_raw"], 934, "TruncatedSource", num_cases=2, shape=(40, 44, 34))
    bad = os.path.join(source, "imagesTr", "case000_0000.nii.gz")
    truncate(bad)
    out = run(["mapseg_plan_and_preprocess", "-d", "934", "-pl", "MAPSegPlannerCPU", "-npfp", "1", "--no_pbar"], env,
              cwd=root, check=False)
    assert out.returncode != 0 and f"{bad}: cannot read the image" in out.stderr and "Traceback" not in out.stderr


def test_truncated_prediction_input_is_named(tmp_path):
    """SimpleITK reads a truncated .nii.gz without complaint; the predictor hook refuses it before preprocessing."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from mapseg_nnunet.inference import predictor_hook
    folder = write_zscored_dataset(str(tmp_path), 935, "Inputs", num_cases=2, shape=(20, 22, 18), labeled=False)
    bad = os.path.join(folder, "imagesTr", "case001_0000.nii.gz")
    truncate(bad)
    predictor_hook.install()
    predictor = nnUNetPredictor(device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.dataset_json = {"file_ending": ".nii.gz"}
    predictor.network = torch.nn.Identity()
    predictor.network.mapseg_intensity = None  # any MAPSeg network carries the attribute
    with pytest.raises(DatasetError, match=f"{bad}: cannot read the image"):
        predictor._manage_input_and_output_lists(os.path.join(folder, "imagesTr"), str(tmp_path / "out"))


def test_small_cohort_is_reported_before_training_and_split_command(zscored_source):
    root, env, _ = zscored_source
    out = run(["nnUNetv2_train", "931", "3d_fullres", "0", "-tr", "nnUNetTrainerMAPSegUDA", "-p", "MAPSegPlansCPU",
               "-device", "cpu"], env, cwd=root, check=False, timeout=600)
    assert out.returncode != 0
    message = out.stdout + out.stderr
    assert "has 3 labeled case(s), fewer than the 5 folds" in message and "fold 'all'" in message
    assert "mapseg_nnunet split -d Dataset931_ZSource" in message
    out = run(["mapseg_nnunet", "split", "-d", "931"], env, cwd=root)
    splits = json.load(open(os.path.join(env["nnUNet_preprocessed"], "Dataset931_ZSource", "splits_final.json")))
    assert len(splits) == 3 and sorted(v for s in splits for v in s["val"]) == ["case000", "case001", "case002"]
    assert all(len(s["train"]) == 2 for s in splits) and "3 folds" in out.stdout
    again = run(["mapseg_nnunet", "split", "-d", "931"], env, cwd=root, check=False)
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_iteration_progress_lines_follow_the_interval():
    from mapseg_nnunet.training.progress import IterationProgress
    times = iter([0.0] + [5.0 * i for i in range(1, 10)])
    lines = []
    progress = IterationProgress(10, 12.0, lines.append, epoch=3, clock=lambda: next(times))
    for done in range(1, 10):
        progress.update(done)
    # 5 s per iteration: a line at 15 s (iteration 3) and 30 s (6) and 45 s (9)
    assert lines == ["epoch 3: iteration 3/10, 0.2 it/s, 35 s left in this epoch",
                     "epoch 3: iteration 6/10, 0.2 it/s, 20 s left in this epoch",
                     "epoch 3: iteration 9/10, 0.2 it/s, 5 s left in this epoch"]
    silent = IterationProgress(10, 0, lines.append, epoch=0, clock=lambda: 1e9)
    silent.update(5)
    assert len(lines) == 3


def test_planner_help_and_doctor_list_the_stock_cpu_planner(tmp_path):
    from mapseg_nnunet.cli.plan_and_preprocess import PLANNERS
    assert "nnUNetPlannerCPU" in PLANNERS  # doctor prints every name of PLANNERS
    out = run(["mapseg_plan_and_preprocess", "-h"], nnunet_env(tmp_path), cwd=tmp_path)
    help_text = " ".join(out.stdout.split())
    for name in PLANNERS:
        assert name in help_text.split("-pl PL")[-1], name
