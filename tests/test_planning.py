"""mapseg_plan_and_preprocess: MAPSeg plans, bad input named by file, nothing half-written."""
import json
import os

import numpy as np
import pytest
import nibabel
from nnunet_fixtures import nnunet_env, run

from mapseg_nnunet.data.atomic import atomic_path, save_json_atomic
from mapseg_nnunet.data.synthetic import write_synthetic_dataset


def test_cpu_plans_content(planned_dataset):
    root, env = planned_dataset
    folder = os.path.join(env["nnUNet_preprocessed"], "Dataset901_Synthetic")
    plans = json.load(open(os.path.join(folder, "MAPSegPlansCPU.json")))
    assert list(plans["configurations"]) == ["3d_fullres"]
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["patch_size"] == [32, 32, 32] and cfg["batch_size"] == 2
    assert cfg["architecture"]["network_class_name"] == "mapseg_nnunet.architectures.mapseg_net.MAPSegNet"
    assert cfg["architecture"]["arch_kwargs"]["width"] == 32
    assert cfg["normalization_schemes"] == ["NoNormalization"]
    assert cfg["mapseg"]["intensity"]["inference_percentile"] == 99.5
    assert cfg["data_identifier"] == "MAPSegPlansCPU_3d_fullres"
    assert plans["experiment_planner_used"] == "MAPSegPlannerCPU"
    entries = os.listdir(folder)
    assert not [e for e in entries if "partial" in e], entries
    cases = [f for f in os.listdir(os.path.join(folder, "MAPSegPlansCPU_3d_fullres")) if f.endswith(".pkl")]
    assert len(cases) == 6


def test_paper_planner_rejects_cases_smaller_than_the_patch(planned_dataset):
    root, env = planned_dataset
    out = run(["mapseg_plan_and_preprocess", "-d", "901", "-pl", "MAPSegPlanner", "--no_pp", "-npfp", "1",
               "--no_pbar"], env, cwd=root, check=False)
    assert out.returncode != 0
    assert "case000_0000.nii.gz" in out.stderr and "smaller than the [96, 96, 96] patch" in out.stderr
    assert not os.path.exists(os.path.join(env["nnUNet_preprocessed"], "Dataset901_Synthetic", "MAPSegPlans.json"))


@pytest.fixture()
def small_dataset(tmp_path):
    env = nnunet_env(tmp_path)
    folder = write_synthetic_dataset(env["nnUNet_raw"], 902, name="Bad")
    return tmp_path, env, folder


def test_nan_volume_named(small_dataset):
    root, env, folder = small_dataset
    path = os.path.join(folder, "imagesTr", "case002_0000.nii.gz")
    img = nibabel.load(path)
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[3, 3, 3] = np.nan  # (SimpleITK would read this voxel back as 0)
    nibabel.save(nibabel.Nifti1Image(arr, img.affine, img.header), path)
    out = run(["mapseg_plan_and_preprocess", "-d", "902", "-pl", "MAPSegPlannerCPU", "--no_pbar"], env, cwd=root,
              check=False)
    assert out.returncode != 0 and "case002_0000.nii.gz: contains NaN" in out.stderr
    assert not os.path.exists(os.path.join(env["nnUNet_preprocessed"], "Dataset902_Bad"))


def test_missing_file_and_wrong_channel_count_named(small_dataset, monkeypatch):
    root, env, folder = small_dataset
    monkeypatch.setenv("nnUNet_raw", env["nnUNet_raw"])
    from mapseg_nnunet.data.errors import DatasetError
    from mapseg_nnunet.planning.preprocess import check_raw_dataset
    djson = os.path.join(folder, "dataset.json")
    meta = json.load(open(djson))
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    json.dump(meta, open(djson, "w"))
    with pytest.raises(DatasetError, match=r"case000_0000\.nii\.gz: case case000 has 1 channel file\(s\) but "
                                           r"dataset.json declares 2"):
        check_raw_dataset(902, progress=False)
    meta["channel_names"] = {"0": "T1"}
    json.dump(meta, open(djson, "w"))
    os.remove(os.path.join(folder, "imagesTr", "case004_0000.nii.gz"))
    with pytest.raises(DatasetError, match="case004"):
        check_raw_dataset(902, progress=False)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "plans.json"
    save_json_atomic({"v": 1}, str(target))
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write('{"v": ')
            raise KeyboardInterrupt
    assert json.load(open(target)) == {"v": 1}
    assert os.listdir(tmp_path) == ["plans.json"]
