"""Test-time (source-free) UDA as two sites run it, through the stock commands: stage 1 at the source site, nnU-Net's
model zip as the only thing shipped, stage 2 at a target site whose nnU-Net folders hold no source data,
prediction with stock nnUNetv2_predict."""
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunet_fixtures import nnunet_env, run, with_ext_trainer

STAGE1 = "nnUNetTrainerMAPSegUDA_noMPL_smoke"
STAGE2 = "nnUNetTrainerMAPSegTTA_smoke"
PLANS = "MAPSegPlansCPU"


def _distance(a: dict, b: dict, keys) -> float:
    return float(torch.sqrt(sum(((a[k].float() - b[k].float()) ** 2).sum() for k in keys)))


@pytest.fixture(scope="module")
def stage1_zip(planned_dataset, tmp_path_factory):
    """Stage 1 trained on the labeled source 901 and exported with nnUNetv2_export_model_to_zip."""
    root, env = planned_dataset
    out = tmp_path_factory.mktemp("source_site")
    env = {**env, "nnUNet_results": str(out / "results")}
    run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", STAGE1, "-p", PLANS, "-device", "cpu"], env, cwd=root)
    run(["nnUNetv2_export_model_to_zip", "-d", "901", "-o", str(out / "stage1.zip"), "-c", "3d_fullres", "-tr",
         STAGE1, "-p", PLANS, "-f", "0"], env, cwd=root)
    return out / "stage1.zip"


@pytest.fixture(scope="module")
def target_site(stage1_zip, tmp_path_factory):
    """A target site: its own nnU-Net folders with only the unlabeled target 914 and the installed stage-1 zip."""
    from mapseg_nnunet.data.synthetic import write_synthetic_dataset
    site = tmp_path_factory.mktemp("target_site")
    env = with_ext_trainer(nnunet_env(site))
    write_synthetic_dataset(env["nnUNet_raw"], 914, name="TargetSite", labeled=False, seed=914)
    run(["nnUNetv2_install_pretrained_model_from_zip", str(stage1_zip)], env, cwd=site)
    return site, env


def test_source_free_two_stage_adaptation_and_prediction(target_site, tmp_path):
    site, env = target_site
    run(["mapseg_receive_source_model", "-t", "914", "-d", "901", "-tr", STAGE1, "-p", PLANS, "-f", "0",
         "--no_pbar"], env, cwd=site)
    run(["nnUNetv2_train", "914", "3d_fullres", "0", "-tr", STAGE2, "-p", PLANS, "-device", "cpu"], env, cwd=site)
    # the target site never had source images, labels or preprocessed source data
    assert os.listdir(env["nnUNet_raw"]) == ["Dataset914_TargetSite"]
    assert os.listdir(env["nnUNet_preprocessed"]) == ["Dataset914_TargetSite"]

    results = os.path.join(env["nnUNet_results"])
    stage1 = torch.load(os.path.join(results, "Dataset901_Synthetic", f"{STAGE1}__{PLANS}__3d_fullres", "fold_0",
                                     "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    fold = os.path.join(results, "Dataset914_TargetSite", f"{STAGE2}__{PLANS}__3d_fullres", "fold_0")
    stage2 = torch.load(os.path.join(fold, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    extra = stage2["mapseg"]
    assert stage2["trainer_name"] == STAGE2 and extra["teacher_steps"] == 8
    source, student, teacher = stage1["network_weights"], extra["student_weights"], extra["teacher_weights"]
    floats = [k for k, v in source.items() if v.dtype.is_floating_point]
    head = [k for k in floats if ".seg_layers." in k]
    assert head and set(student) == set(source)
    # the student adapted; the EMA teacher (alpha 0.999, 8 steps) stayed next to the stage-1 network, head included:
    # it started from it (a teacher from any other start would be as far from stage 1 as the student is)
    student_drift = _distance(student, source, floats)
    assert student_drift > 0
    assert _distance(teacher, source, floats) < 0.05 * student_drift
    assert _distance(teacher, source, head) < 0.05 * max(_distance(student, source, head), 1e-12)
    # label-free selection: Score = -L_MPL on the held-out target cases
    assert len(extra["score_history"]) == 2
    assert all(h["score"] == -h["val_mpl"] and 0 <= h["agreement_dice"] <= 1 for h in extra["score_history"])
    log = open(next(os.path.join(fold, f) for f in os.listdir(fold) if f.startswith("training_log"))).read()
    assert "Stage-1 source model loaded" in log

    images = os.path.join(env["nnUNet_raw"], "Dataset914_TargetSite", "imagesTr")
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    os.symlink(os.path.join(images, "case000_0000.nii.gz"), inp / "case000_0000.nii.gz")
    run(["nnUNetv2_predict", "-i", str(inp), "-o", str(out), "-d", "914", "-c", "3d_fullres", "-tr", STAGE2,
         "-p", PLANS, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta"], env, cwd=site)
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case000.nii.gz")))
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(inp / "case000_0000.nii.gz")))
    assert pred.shape == image.shape and set(np.unique(pred)) <= {0, 1, 2}


def test_receive_names_the_broken_file(target_site, tmp_path, monkeypatch):
    site, env = target_site
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    from mapseg_nnunet.training.source_model import receive_source_model
    from mapseg_nnunet.data.errors import DatasetError
    model = os.path.join(env["nnUNet_results"], "Dataset901_Synthetic", f"{STAGE1}__{PLANS}__3d_fullres")
    with pytest.raises(DatasetError, match="fold_3/checkpoint_final.pth: stage-1 checkpoint is missing"):
        receive_source_model("914", model, fold="3", progress=False)
    broken = tmp_path / "model"
    (broken / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        os.symlink(os.path.join(model, name), broken / name)
    (broken / "fold_0" / "checkpoint_final.pth").write_bytes(b"truncated download")
    with pytest.raises(DatasetError, match="checkpoint_final.pth: not a readable nnU-Net checkpoint"):
        receive_source_model("914", str(broken), progress=False)
    with pytest.raises(DatasetError, match="model/plans.json: file is missing"):
        receive_source_model("914", str(tmp_path / "nothing" / "model"), progress=False)
