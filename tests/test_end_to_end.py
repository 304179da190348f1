"""Stock nnU-Net commands, as users type them, on the CPU: train, validate and predict with MAPSeg plans and with
stock nnUNetPlans."""
import glob
import json
import os
import signal
import subprocess
import time

import numpy as np
import SimpleITK as sitk
import torch
from nnunet_fixtures import run

RESULTS = "Dataset901_Synthetic"


def _predict_and_check(root, env, trainer, plans, tmp_path):
    inp, out = tmp_path / f"in_{plans}", tmp_path / f"out_{plans}"
    inp.mkdir()
    for case in ("case000", "case001"):
        os.symlink(os.path.join(env["nnUNet_raw"], RESULTS, "imagesTr", f"{case}_0000.nii.gz"),
                   inp / f"{case}_0000.nii.gz")
    run(["nnUNetv2_predict", "-i", str(inp), "-o", str(out), "-d", "901", "-c", "3d_fullres", "-tr", trainer,
         "-p", plans, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta"], env, cwd=root)
    api = tmp_path / f"api_{plans}"
    code = f"""
import os, torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
p = nnUNetPredictor(use_mirroring=False, device=torch.device('cpu'))
p.initialize_from_trained_model_folder(os.path.join(os.environ['nnUNet_results'], '{RESULTS}',
    '{trainer}__{plans}__3d_fullres'), (0,), 'checkpoint_final.pth')
p.predict_from_files('{inp}', '{api}', num_processes_preprocessing=1, num_processes_segmentation_export=1)
"""
    run(["python", "-c", code], env, cwd=root)
    for case in ("case000", "case001"):
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(inp / f"{case}_0000.nii.gz")))
        assert pred.shape == image.shape and set(np.unique(pred)) <= {0, 1, 2}
        assert np.array_equal(pred, sitk.GetArrayFromImage(sitk.ReadImage(str(api / f"{case}.nii.gz"))))


def test_train_validate_predict_with_mapseg_plans(trained_mapseg_smoke, tmp_path):
    root, env, fold = trained_mapseg_smoke  # nnUNetv2_train, as a shared session fixture
    trainer = "nnUNetTrainerMAPSegUDA_smoke"
    ckpt = torch.load(os.path.join(fold, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == trainer and ckpt["current_epoch"] == 2
    assert any(k.startswith("decoder.seg_layers.") for k in ckpt["network_weights"])
    summary = json.load(open(os.path.join(fold, "validation", "summary.json")))
    assert set(summary["mean"]) == {"1", "2"}
    log = open(glob.glob(os.path.join(fold, "training_log_*.txt"))[0]).read()
    assert "not MAPSeg plans" not in log
    _predict_and_check(root, env, trainer, "MAPSegPlansCPU", tmp_path)


def test_predictor_hook_is_glc_on_the_normalised_case(trained_mapseg_smoke):
    """nnUNetPredictor (Python API) on a MAPSeg model == MAPSeg normalisation + the library's GLC sliding window
    (itself tested against a plain reimplementation), with nnU-Net's Gaussian weighting and mirroring; a fold
    ensemble normalises the case once; and different from nnU-Net's own patch-wise sliding window."""
    root, env, _ = trained_mapseg_smoke
    code = r"""
import os, numpy as np, torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from mapseg_nnunet.data.intensity import normalize_case
from mapseg_nnunet.inference.glc import glc_sliding_window_logits
p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True, device=torch.device('cpu'))
p.initialize_from_trained_model_folder(os.path.join(os.environ['nnUNet_results'], 'Dataset901_Synthetic',
    'nnUNetTrainerMAPSegUDA_smoke__MAPSegPlansCPU__3d_fullres'), (0,), 'checkpoint_final.pth')
p.allowed_mirroring_axes = (0, 1, 2)
rng = np.random.default_rng(0)
raw = np.zeros((1, 44, 40, 36), dtype=np.float32)
raw[0, 4:-4, 3:-3, 2:-2] = rng.uniform(20, 300, (36, 34, 32))
hooked = p.predict_sliding_window_return_logits(torch.from_numpy(raw))
net = p.network.eval()
normalised = torch.from_numpy(normalize_case(raw, net.mapseg_intensity))
from mapseg_nnunet.inference.glc import WINDOWS_PER_BATCH  # the hook's batching: the same computation
library = glc_sliding_window_logits(net, normalised, (32, 32, 32), 3, 0.5, True, (0, 1, 2),
                                    windows_per_batch=WINDOWS_PER_BATCH)
assert hooked.shape == (3, 44, 40, 36)
assert torch.equal(hooked, library), (hooked - library).abs().max()
# an ensemble of two folds normalises the case once and averages the folds' GLC logits
import mapseg_nnunet.inference.predictor_hook as hook
calls = []
def counting(image, settings, percentile=None):
    calls.append(image.shape)
    return normalize_case(image, settings, percentile)
hook.normalize_case = counting
p.list_of_parameters = [p.list_of_parameters[0]] * 2
ensemble = p.predict_logits_from_preprocessed_data(torch.from_numpy(raw))
assert len(calls) == 1, calls
# float32 sums in another order: rounding relative to logits of order 10 (and the exact -1e4 background fill)
assert torch.allclose(ensemble, library, rtol=1e-5, atol=1e-4), (ensemble - library).abs().max()
hook.normalize_case = normalize_case
net.mapseg_glc_inference = False  # nnU-Net's own patch-wise windows on the same normalised case
patch_wise = p.predict_sliding_window_return_logits(torch.from_numpy(raw)).float()
assert (hooked - patch_wise).abs().max() > 1e-3
print('EQUAL')
"""
    out = run(["python", "-c", code], env, cwd=root)
    assert "EQUAL" in out.stdout


def test_exact_user_command_on_stock_plans(planned_dataset, tmp_path):
    """`nnUNetv2_train 901 3d_fullres 0 -tr nnUNetTrainerMAPSegUDA` on stock nnUNetPlans adapts the plans, saves
    them with the model, and trains; a one-step plans variant of them then trains to the end and predicts
    consistently."""
    root, env = planned_dataset
    # nnU-Net 2.8.1's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0
    run(["nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--no_pbar"],
        {**env, "nnUNet_n_proc_DA": "1"}, cwd=root)
    model = os.path.join(env["nnUNet_results"], RESULTS, "nnUNetTrainerMAPSegUDA__nnUNetPlans__3d_fullres")
    log_path = tmp_path / "train.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", "nnUNetTrainerMAPSegUDA",
                                 "-device", "cpu"], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and "Epoch 0" not in log_path.read_text():
            time.sleep(1)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert "Epoch 0" in log_path.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    plans = json.load(open(os.path.join(model, "plans.json")))
    cfg = plans["configurations"]["3d_fullres"]
    stock = json.load(open(os.path.join(env["nnUNet_preprocessed"], RESULTS, "nnUNetPlans.json")))
    stock_cfg = stock["configurations"]["3d_fullres"]
    # the user's U-Net, patch and batch, inside the GLC U-Net; nnU-Net's own normalisation is kept
    assert cfg["architecture"]["network_class_name"].endswith("GLCUNet")
    assert cfg["architecture"]["arch_kwargs"]["unet_class_name"] == stock_cfg["architecture"]["network_class_name"]
    assert (cfg["patch_size"], cfg["batch_size"]) == (stock_cfg["patch_size"], stock_cfg["batch_size"])
    assert cfg["mapseg"]["intensity"] is None and cfg["normalization_schemes"] == ["ZScoreNormalization"]
    assert "not MAPSeg plans" in log_path.read_text()

    # to the end and through prediction on a one-step plans variant of the same stock plans (at the stock 56^3
    # patch an iteration takes half a minute on two CPU cores)
    variant = "nnUNetPlans_oneStep"
    run(["mapseg_plans_variant", "-d", "901", "-p", "nnUNetPlans", "-o", variant, "--set", "num_epochs=1",
         "num_iterations_per_epoch=1", "num_val_iterations_per_epoch=1", "final_validation=false"], env, cwd=root)
    run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", "nnUNetTrainerMAPSegUDA", "-p", variant, "-device",
         "cpu"], env, cwd=root)
    _predict_and_check(root, env, "nnUNetTrainerMAPSegUDA", variant, tmp_path)
