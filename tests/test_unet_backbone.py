"""The MAPSeg recipe on nnU-Net's residual-encoder U-Net through the stock commands: planning and preprocessing
with MAPSegResEncPlannerCPU (nnU-Net's z-score), target registration, MAE on the z-scored data, UDA from the MAE
weights with stock -pretrained_weights, GLC prediction with nnUNetv2_predict, and test-time UDA (stage 2 on an
unlabeled target) from that U-Net. Fed-MAPSeg on the U-Net is in test_federated.py."""
import glob
import json
import os

import numpy as np
import SimpleITK as sitk
import torch
from nnunet_fixtures import run

from test_end_to_end import RESULTS

PLANS = "MAPSegResEncPlansCPU"


def test_resenc_plans_mae_uda_predict(source_with_target, tmp_path):
    root, env = source_with_target
    run(["mapseg_plan_and_preprocess", "-d", "901", "-pl", "MAPSegResEncPlannerCPU", "-np", "1", "-npfp", "1",
         "--no_pbar"], env, cwd=root)
    plans = json.load(open(os.path.join(env["nnUNet_preprocessed"], RESULTS, PLANS + ".json")))
    config = plans["configurations"]["3d_fullres"]
    assert list(plans["configurations"]) == ["3d_fullres"]
    assert config["architecture"]["network_class_name"] == "mapseg_nnunet.architectures.glc_unet.GLCUNet"
    kwargs = config["architecture"]["arch_kwargs"]
    assert kwargs["unet_class_name"].endswith("ResidualEncoderUNet") and kwargs["fusion_stage"] == 2
    assert kwargs["features_per_stage"] == [16, 32, 64, 128]  # the CPU preset's half width
    # nnU-Net's normalisation into the plans' own data; the MAPSeg intensity step is off
    assert config["patch_size"] == [32, 32, 32] and config["data_identifier"] == PLANS + "_3d_fullres"
    assert config["normalization_schemes"] == ["ZScoreNormalization"] and config["mapseg"]["intensity"] is None
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    data = nnUNetDatasetBlosc2(os.path.join(env["nnUNet_preprocessed"], RESULTS, PLANS + "_3d_fullres"))
    image, seg, _, _ = data.load_case(data.identifiers[0])
    inside = np.asarray(seg[0]) >= 0 if config["use_mask_for_norm"][0] else np.ones(seg.shape[1:], bool)
    values = np.asarray(image[0])[inside]
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1) < 0.05  # z-scored
    run(["mapseg_register_targets", "-s", "901", "-t", "913", "-p", PLANS, "--no_pbar"], env, cwd=root)

    # short budgets through plans variants (the stock way): MAE 2 iterations; UDA 2 warm-up + 2 adapting
    mae_plans, uda_plans = PLANS + "_maeShort", PLANS + "_udaShort"
    run(["mapseg_plans_variant", "-d", "901", "-p", PLANS, "-o", mae_plans, "--set", "num_epochs=1",
         "num_iterations_per_epoch=2", "num_val_iterations_per_epoch=1"], env, cwd=root)
    run(["mapseg_plans_variant", "-d", "901", "-p", PLANS, "-o", uda_plans, "--set", "num_epochs=2",
         "num_iterations_per_epoch=2", "num_val_iterations_per_epoch=1", "warmup_iterations=2",
         "final_validation=false"], env, cwd=root)  # prediction is checked below
    run(["nnUNetv2_train", "901", "3d_fullres", "all", "-tr", "nnUNetTrainerMAPSegMAE", "-p", mae_plans,
         "-device", "cpu"], env, cwd=root)
    mae = os.path.join(env["nnUNet_results"], RESULTS, f"nnUNetTrainerMAPSegMAE__{mae_plans}__3d_fullres",
                       "fold_all", "checkpoint_final.pth")
    mae_weights = torch.load(mae, map_location="cpu", weights_only=False)["network_weights"]
    assert mae_weights["unet.decoder.seg_layers.1.weight"].shape[0] == 1  # one output per input channel

    trainer, variant = "nnUNetTrainerMAPSegUDA", uda_plans
    run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", trainer, "-p", variant, "-device", "cpu",
         "-pretrained_weights", mae], env, cwd=root)
    fold = os.path.join(env["nnUNet_results"], RESULTS, f"{trainer}__{variant}__3d_fullres", "fold_0")
    log = open(glob.glob(os.path.join(fold, "training_log_*.txt"))[0]).read()
    assert "UDA targets (sampled uniformly): " in log and "Dataset913_TargetC (" in log
    assert "warm-up done, EMA teacher initialised" in log
    ckpt = torch.load(os.path.join(fold, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["mapseg"]["teacher_steps"] == 2 and "fusion.weight" in ckpt["network_weights"]

    _predict_one_case(env, root, tmp_path / "uda", RESULTS, "901", trainer, variant)

    # test-time UDA from the U-Net: the UDA model is the stage-1 model of an unlabeled target (915)
    from mapseg_nnunet.data.synthetic import write_synthetic_dataset
    write_synthetic_dataset(env["nnUNet_raw"], 915, name="TargetTTA", labeled=False, seed=915)
    run(["mapseg_receive_source_model", "-t", "915", "-d", "901", "-tr", trainer, "-p", variant, "-f", "0",
         "--no_pbar"], env, cwd=root)
    tta = "nnUNetTrainerMAPSegTTA_smoke"
    run(["nnUNetv2_train", "915", "3d_fullres", "0", "-tr", tta, "-p", variant, "-device", "cpu"], env, cwd=root)
    tta_fold = os.path.join(env["nnUNet_results"], "Dataset915_TargetTTA", f"{tta}__{variant}__3d_fullres", "fold_0")
    stage2 = torch.load(os.path.join(tta_fold, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    student = stage2["mapseg"]["student_weights"]
    assert set(student) == set(ckpt["network_weights"])  # the same GLC U-Net, fusion included
    assert any(not torch.equal(student[k], ckpt["network_weights"][k]) for k in student
               if student[k].dtype.is_floating_point)  # it adapted
    _predict_one_case(env, root, tmp_path / "tta", "Dataset915_TargetTTA", "915", tta, variant)


def _predict_one_case(env, root, folder, raw_dataset: str, dataset: str, trainer: str, plans: str) -> None:
    """Stock nnUNetv2_predict (GLC) of the dataset's first training image: a label map of the image's shape."""
    inp, out = folder / "in", folder / "out"
    inp.mkdir(parents=True)
    image = os.path.join(env["nnUNet_raw"], raw_dataset, "imagesTr", "case000_0000.nii.gz")
    os.symlink(image, inp / "case000_0000.nii.gz")
    run(["nnUNetv2_predict", "-i", str(inp), "-o", str(out), "-d", dataset, "-c", "3d_fullres", "-tr", trainer,
         "-p", plans, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta"], env, cwd=root)
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case000.nii.gz")))
    assert prediction.shape == sitk.GetArrayFromImage(sitk.ReadImage(image)).shape
    assert set(np.unique(prediction)) <= {0, 1, 2}
