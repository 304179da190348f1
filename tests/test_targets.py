"""mapseg_register_targets: unlabeled targets preprocessed with the source plans, linked to the source, labels
never read, bad input named, nothing half-registered."""
import json
import os

import nibabel
import numpy as np
import pytest
from nnunet_fixtures import run

from mapseg_nnunet.data.synthetic import write_synthetic_dataset


def _registry(env):
    return json.load(open(os.path.join(env["nnUNet_preprocessed"], "Dataset901_Synthetic", "mapseg_targets.json")))


def _register(root, env, *targets, check=True):
    return run(["mapseg_register_targets", "-s", "901", "-t", *targets, "-p", "MAPSegPlansCPU", "--no_pbar"], env,
               cwd=root, check=check)


def test_register_two_targets_label_blind(planned_dataset):
    root, env = planned_dataset
    for dataset_id, name in ((911, "TargetA"), (912, "TargetB")):
        write_synthetic_dataset(env["nnUNet_raw"], dataset_id, name=name, labeled=False, seed=dataset_id)
    # a target may carry label files; they must never be opened: make them unreadable
    labels = os.path.join(env["nnUNet_raw"], "Dataset911_TargetA", "labelsTr")
    os.makedirs(labels)
    for i in range(6):
        with open(os.path.join(labels, f"case{i:03d}.nii.gz"), "wb") as f:
            f.write(os.urandom(512))
    out = _register(root, env, "911", "912")
    assert "Registered Dataset911_TargetA (6 cases" in out.stdout
    _register(root, env, "911")  # registering again replaces the entry
    entries = [e for e in _registry(env)["targets"] if e["dataset_name"] in ("Dataset911_TargetA",
                                                                              "Dataset912_TargetB")]
    assert sorted(e["dataset_name"] for e in entries) == ["Dataset911_TargetA", "Dataset912_TargetB"]
    assert all(e["role"] == "target" and e["data_identifier"] == "MAPSegPlansCPU_3d_fullres" for e in entries)

    target_pre = os.path.join(env["nnUNet_preprocessed"], "Dataset911_TargetA")
    plans = json.load(open(os.path.join(target_pre, "MAPSegPlansCPU.json")))
    source_plans = json.load(open(os.path.join(env["nnUNet_preprocessed"], "Dataset901_Synthetic",
                                               "MAPSegPlansCPU.json")))
    assert plans["dataset_name"] == "Dataset911_TargetA"
    assert plans["configurations"] == source_plans["configurations"]  # the source's plans, unchanged

    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    ds = nnUNetDatasetBlosc2(os.path.join(target_pre, "MAPSegPlansCPU_3d_fullres"))
    assert len(ds.identifiers) == 6
    data, seg, _, props = ds.load_case(ds.identifiers[0])
    assert data.shape[0] == 1 and np.asarray(seg).max() <= 0  # no label information at all
    assert props["class_locations"] == {1: [], 2: []}
    assert not [e for e in os.listdir(target_pre) if "partial" in e]


def test_register_targets_python_listing(planned_dataset, monkeypatch):
    root, env = planned_dataset
    write_synthetic_dataset(env["nnUNet_raw"], 913, name="TargetC", labeled=False, seed=3)
    _register(root, env, "913")
    for key in ("nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.setenv(key, env[key])
    from mapseg_nnunet.data.target_registry import registered_targets, target_data_folder
    names = [t["dataset_name"] for t in registered_targets(901, "MAPSegPlansCPU")]
    assert "Dataset913_TargetC" in names
    assert registered_targets(901, "MAPSegPlans") == []
    entry = [t for t in registered_targets(901, "MAPSegPlansCPU") if t["dataset_name"] == "Dataset913_TargetC"][0]
    assert os.path.isdir(target_data_folder(entry))


@pytest.mark.parametrize("problem", ["channel_name", "channel_count", "empty", "nan"])
def test_bad_targets_named_and_nothing_registered(planned_dataset, problem):
    root, env = planned_dataset
    dataset_id = {"channel_name": 921, "channel_count": 922, "empty": 923, "nan": 924}[problem]
    folder = write_synthetic_dataset(env["nnUNet_raw"], dataset_id, name=f"Bad{problem}", labeled=False,
                                     channel_name="T2" if problem == "channel_name" else "T1")
    djson = os.path.join(folder, "dataset.json")
    if problem == "channel_count":
        meta = json.load(open(djson))
        meta["channel_names"] = {"0": "T1", "1": "T1b"}
        json.dump(meta, open(djson, "w"))
    elif problem == "empty":
        for f in os.listdir(os.path.join(folder, "imagesTr")):
            os.remove(os.path.join(folder, "imagesTr", f))
    elif problem == "nan":
        path = os.path.join(folder, "imagesTr", "case003_0000.nii.gz")
        img = nibabel.load(path)
        arr = np.asarray(img.dataobj).astype(np.float32)
        arr[1, 2, 3] = np.nan
        nibabel.save(nibabel.Nifti1Image(arr, img.affine, img.header), path)
    before = _registry(env) if os.path.exists(os.path.join(env["nnUNet_preprocessed"], "Dataset901_Synthetic",
                                                           "mapseg_targets.json")) else None
    out = _register(root, env, str(dataset_id), check=False)
    assert out.returncode != 0
    expected = {"channel_name": "dataset.json: channel names", "channel_count": "dataset.json: the target has 2",
                "empty": "imagesTr: no images", "nan": "case003_0000.nii.gz: contains NaN"}[problem]
    assert expected in out.stderr, out.stderr
    target_pre = os.path.join(env["nnUNet_preprocessed"], os.path.basename(folder))
    assert not os.path.exists(os.path.join(target_pre, "MAPSegPlansCPU_3d_fullres"))
    after = _registry(env) if before is not None else None
    assert after == before
