"""The MAPSeg recipe on nnU-Net's residual-encoder U-Net through the stock commands: planning with
MAPSegResEncPlannerCPU (sharing the MAPSeg plans' preprocessed data and registered targets), MAE, UDA from the MAE
weights with stock -pretrained_weights, and GLC prediction with nnUNetv2_predict."""
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
    # the data are those of MAPSegPlansCPU (same spacing and intensity convention): planning only
    run(["mapseg_plan_and_preprocess", "-d", "901", "-pl", "MAPSegResEncPlannerCPU", "--no_pp", "-npfp", "1",
         "--no_pbar"], env, cwd=root)
    plans = json.load(open(os.path.join(env["nnUNet_preprocessed"], RESULTS, PLANS + ".json")))
    config = plans["configurations"]["3d_fullres"]
    assert list(plans["configurations"]) == ["3d_fullres"]
    assert config["architecture"]["network_class_name"] == "mapseg_nnunet.architectures.glc_unet.GLCUNet"
    kwargs = config["architecture"]["arch_kwargs"]
    assert kwargs["unet_class_name"].endswith("ResidualEncoderUNet") and kwargs["fusion_stage"] == 2
    assert config["patch_size"] == [32, 32, 32] and config["data_identifier"] == "MAPSegPlansCPU_3d_fullres"
    assert config["normalization_schemes"] == ["NoNormalization"] and config["mapseg"]["intensity"] is not None

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
    assert "UDA targets (sampled uniformly): " in log and "Dataset913_TargetC (" in log  # the shared data's target
    assert "warm-up done, EMA teacher initialised" in log
    ckpt = torch.load(os.path.join(fold, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["mapseg"]["teacher_steps"] == 2 and "fusion.weight" in ckpt["network_weights"]

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    image = os.path.join(env["nnUNet_raw"], RESULTS, "imagesTr", "case000_0000.nii.gz")
    os.symlink(image, inp / "case000_0000.nii.gz")
    run(["nnUNetv2_predict", "-i", str(inp), "-o", str(out), "-d", "901", "-c", "3d_fullres", "-tr", trainer,
         "-p", variant, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta"], env, cwd=root)
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case000.nii.gz")))
    assert prediction.shape == sitk.GetArrayFromImage(sitk.ReadImage(image)).shape
    assert set(np.unique(prediction)) <= {0, 1, 2}
