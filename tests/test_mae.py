"""MAE pretraining: the masked-voxel MSE falls on the demo data; stock
nnUNetv2_train runs it on source + registered targets; its encoder transfers through -pretrained_weights."""
import glob
import json
import os

import numpy as np
import pytest
import torch
from conftest import nnunet_env, run, with_ext_trainer

from mapseg_nnunet.dataset_conversion.demo_brain import generate_demo_cohort


@pytest.fixture(scope="module")
def demo_planned(tmp_path_factory):
    """A small demo cohort: T1w source (6 cases) planned with MAPSegPlannerCPU + the T2w target registered."""
    root = tmp_path_factory.mktemp("demo")
    env = with_ext_trainer(nnunet_env(root))
    generate_demo_cohort(env["nnUNet_raw"], (961, 962, 963, 964), seed=0, verbose=False,
                         counts={"source_train": 6, "target_train": 4, "target_test": 1})
    run(["mapseg_plan_and_preprocess", "-d", "961", "-pl", "MAPSegPlannerCPU", "-np", "1", "-npfp", "1",
         "--no_pbar"], env, cwd=root)
    run(["mapseg_register_targets", "-s", "961", "-t", "962", "-p", "MAPSegPlansCPU", "--no_pbar"], env, cwd=root)
    return root, env


def test_masked_mse_falls_on_demo_data(demo_planned, monkeypatch):
    root, env = demo_planned
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA"):
        monkeypatch.setenv(key, env[key])
    from mapseg_nnunet.trainers.mae import nnUNetTrainerMAPSegMAE
    folder = os.path.join(env["nnUNet_preprocessed"], "Dataset961_DemoBrainSourceT1w")
    plans = json.load(open(os.path.join(folder, "MAPSegPlansCPU.json")))
    plans["continue_training"] = False
    torch.manual_seed(0)
    np.random.seed(0)
    trainer = nnUNetTrainerMAPSegMAE(plans, "3d_fullres", 0, json.load(open(os.path.join(folder, "dataset.json"))),
                                     torch.device("cpu"))
    trainer.mae_batch_size = 2
    trainer.initialize()
    train_loader, val_loader = trainer.get_dataloaders()
    val_batches = [next(val_loader) for _ in range(4)]

    def evaluate():
        trainer.network.eval()
        with torch.no_grad():
            out = [trainer._reconstruction_losses(b, torch.Generator().manual_seed(i))[:2]
                   for i, b in enumerate(val_batches)]
        trainer.network.train()
        return np.mean([o[0].item() for o in out]), np.mean([o[1].item() for o in out])

    before, baseline = evaluate()
    trainer.network.train()
    for _ in range(120):
        trainer.train_step(next(train_loader))
    after, _ = evaluate()
    print(f"masked MSE {before:.4f} -> {after:.4f}, mean-intensity baseline {baseline:.4f}")
    assert after < 0.8 * before  # measured on the CPU preset (32^3): 0.274 -> 0.197
    # Not asserted: beating the mean-intensity baseline (0.173 here) takes longer than a CI test on 32^3 patches
    # (0.184 after 200 iterations; with 48^3 patches it was beaten after about 100 iterations).


def test_stock_mae_training_then_encoder_transfer(demo_planned):
    root, env = demo_planned
    run(["nnUNetv2_train", "961", "3d_fullres", "0", "-tr", "nnUNetTrainerMAPSegMAE_smoke", "-p", "MAPSegPlansCPU",
         "-device", "cpu"], env, cwd=root)
    fold = os.path.join(env["nnUNet_results"], "Dataset961_DemoBrainSourceT1w",
                        "nnUNetTrainerMAPSegMAE_smoke__MAPSegPlansCPU__3d_fullres", "fold_0")
    log = open(glob.glob(os.path.join(fold, "training_log_*.txt"))[0]).read()
    assert "Dataset962_DemoBrainTargetT2w (4 cases)" in log and "Dataset961_DemoBrainSourceT1w (6 cases)" in log
    assert "data-loader wait share" in log and "reconstruction skill" in log
    pngs = sorted(os.listdir(os.path.join(fold, "mae_reconstructions")))
    assert pngs == ["epoch_0000.png", "epoch_0001.png"]
    with open(os.path.join(fold, "mae_reconstructions", pngs[-1]), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(os.path.join(fold, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    mae_weights = ckpt["network_weights"]
    assert any(k.startswith("mae_decoder.") for k in mae_weights)

    # what `nnUNetv2_train ... -pretrained_weights FILE` runs, on the network the UDA trainer builds
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from mapseg_nnunet.trainers.uda import nnUNetTrainerMAPSegUDA
    plans = PlansManager(os.path.join(env["nnUNet_preprocessed"], "Dataset961_DemoBrainSourceT1w",
                                      "MAPSegPlansCPU.json"))
    net = nnUNetTrainerMAPSegUDA.build_network_architecture(plans, plans.get_configuration("3d_fullres"), 1, 4, False)
    decoder_before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("decoder.")}
    load_pretrained_weights(net, os.path.join(fold, "checkpoint_final.pth"), verbose=False)
    state = net.state_dict()
    encoder_keys = [k for k in state if k.startswith("encoder.")]
    assert encoder_keys and all(torch.equal(state[k], mae_weights[k]) for k in encoder_keys)
    assert all(torch.equal(state[k], v) for k, v in decoder_before.items())  # segmentation decoder untouched
