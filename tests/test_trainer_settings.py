"""Trainer settings carried by plans variants (ablation switches, budgets, seeds) and the budget-matched stock
nnU-Net baseline (nnUNetPlannerCPU + nnUNetTrainer_settingsFromPlans), through the real console scripts."""
import glob
import json
import os

import numpy as np
import pytest
import torch

from nnunet_fixtures import run
from mapseg_nnunet.training.settings import apply_trainer_settings
from mapseg_nnunet.planning.plans_variant import parse_assignments
from mapseg_nnunet.method.losses import MAPSegLossWeights
from mapseg_nnunet.method.masking import MaskingSettings


class _Trainer:
    def __init__(self):
        self.masking = MaskingSettings()
        self.loss_weights = MAPSegLossWeights()
        self.betas = (0.9, 0.999)
        self.num_epochs = 40


def test_apply_nested_settings_and_reject_unknown_names():
    trainer = _Trainer()
    settings = parse_assignments(["masking.ratio=0.5", "loss_weights.use_glc=false", "betas=[0.8, 0.9]",
                                  "num_epochs=3"])
    lines = apply_trainer_settings(trainer, settings, "plans X")
    assert (trainer.masking.ratio, trainer.loss_weights.use_glc, trainer.betas, trainer.num_epochs) == \
        (0.5, False, (0.8, 0.9), 3)
    assert any("default 0.7" in line for line in lines)
    assert MaskingSettings().ratio == 0.7  # the dataclass default is untouched
    with pytest.raises(ValueError, match="plans X.*'masking.ratoi'"):
        apply_trainer_settings(trainer, {"masking.ratoi": 0.1}, "plans X")
    with pytest.raises(ValueError, match="plans X.*'mask'"):
        apply_trainer_settings(trainer, {"mask.ratio": 0.1}, "plans X")


def test_seed_setting_reproduces_random_draws():
    apply_trainer_settings(_Trainer(), {"seed": 5}, "p")
    a = torch.rand(4)
    apply_trainer_settings(_Trainer(), {"seed": 5}, "p")
    b = torch.rand(4)
    apply_trainer_settings(_Trainer(), {"seed": 6}, "p")
    c = torch.rand(4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _log(root, dataset, trainer, plans):
    logs = glob.glob(str(root / "nnUNet_results" / f"Dataset{dataset}_*" / f"{trainer}__{plans}__3d_fullres" /
                         "fold_0" / "training_log_*.txt"))
    assert logs, f"no training log of {trainer} / {plans}"
    return open(sorted(logs)[-1]).read()


def test_plans_variant_drives_uda_training_with_shared_targets(source_with_target):
    root, env = source_with_target
    variant = "MAPSegPlansCPU_settingsTest"
    run(["mapseg_plans_variant", "-d", "901", "-p", "MAPSegPlansCPU", "-o", variant, "--set", "masking.ratio=0.5",
         "masking.local_cube=4", "num_epochs=1", "warmup_iterations=2", "seed=3",
         "pseudo_labeling.alignment=source_shares", "target_rampup_iterations=2",
         "loss_weights.source_unmasked_after_warmup=false"], env, cwd=root)
    plans = json.load(open(glob.glob(str(root / "nnUNet_preprocessed" / "Dataset901_*" / f"{variant}.json"))[0]))
    config = plans["configurations"]["3d_fullres"]
    assert plans["plans_name"] == variant and config["data_identifier"] == "MAPSegPlansCPU_3d_fullres"
    # an existing variant is not overwritten silently
    again = run(["mapseg_plans_variant", "-d", "901", "-p", "MAPSegPlansCPU", "-o", variant, "--set", "seed=4"],
                env, cwd=root, check=False)
    assert again.returncode != 0 and "exists" in again.stdout + again.stderr
    run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", "nnUNetTrainerMAPSegUDA_smoke", "-p", variant,
         "-device", "cpu"], env, cwd=root)
    log = _log(root, 901, "nnUNetTrainerMAPSegUDA_smoke", variant)
    assert "Trainer setting from the plans: masking.ratio = 0.5 (default 0.7)" in log
    assert "Trainer setting from the plans: masking.local_cube = 4 (default 8)" in log
    assert "seed = 3" in log
    assert "UDA targets" in log and "Dataset913_TargetC" in log  # targets registered with the shared data
    assert "Epoch 0" in log and "Epoch 1" not in log  # num_epochs = 1 instead of the smoke variant's 2
    assert "Adaptation: 2 of 4 iterations trained the target terms" in log and "never adapts" not in log
    assert "pseudo-labels are aligned to them" in log
    assert ("Iteration 2: warm-up done, EMA teacher initialised from the student; target terms ramped up over 2 "
            "iterations; source terms on the masked view only") in log
    # class-share alignment: the source shares counted from the fold's training labels, the epoch's pseudo-labels
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    folder = glob.glob(str(root / "nnUNet_preprocessed" / "Dataset901_*"))[0]
    train_keys = json.load(open(os.path.join(folder, "splits_final.json")))[0]["train"]
    data = os.path.join(folder, "MAPSegPlansCPU_3d_fullres")
    dataset = infer_dataset_class(data)(data, train_keys)
    counts = sum(np.bincount(np.asarray(dataset.load_case(k)[1]).clip(0).ravel().astype(int), minlength=3)[1:3]
                 for k in train_keys)
    line = next(line for line in log.splitlines() if "Source labels' foreground class shares: " in line)
    logged = line.split("class shares: ", 1)[1].split(";")[0]
    np.testing.assert_allclose([float(v) for v in logged.split(", ")], counts / counts.sum(), atol=1e-3)
    record = next(line for line in log.splitlines() if "pseudo_label_shares [" in line)
    shares = json.loads(record.split("pseudo_label_shares ", 1)[1])
    assert len(shares) == 2 and sum(shares) == pytest.approx(1, abs=1e-6)


def test_a_budget_within_its_warmup_says_it_never_adapts(source_with_target):
    """A UDA run whose warm-up covers its iterations trains source-only: it says so at the start, naming both
    numbers and the setting, and at the end."""
    root, env = source_with_target
    variant = "MAPSegPlansCPU_warmupOnly"
    run(["mapseg_plans_variant", "-d", "901", "-p", "MAPSegPlansCPU", "-o", variant, "--set", "num_epochs=1",
         "warmup_iterations=4", "final_validation=false"], env, cwd=root)
    run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", "nnUNetTrainerMAPSegUDA_smoke", "-p", variant,
         "-device", "cpu"], env, cwd=root)
    log = _log(root, 901, "nnUNetTrainerMAPSegUDA_smoke", variant)
    assert "WARNING: warmup_iterations (4) is not below this run's iterations (num_epochs 1 x " \
           "num_iterations_per_epoch 4 = 4): this UDA run never adapts" in log
    assert "Adaptation: 0 of 4 iterations trained the target terms (none" in log


def test_misspelled_setting_stops_training_with_its_name(planned_dataset):
    root, env = planned_dataset
    variant = "MAPSegPlansCPU_typo"
    run(["mapseg_plans_variant", "-d", "901", "-p", "MAPSegPlansCPU", "-o", variant, "--set", "masking.ration=0.5"],
        env, cwd=root)
    out = run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", "nnUNetTrainerMAPSegUDA_smoke", "-p", variant,
               "-device", "cpu"], env, cwd=root, check=False)
    assert out.returncode != 0
    assert f"plans {variant}" in out.stderr and "'masking.ration'" in out.stderr


def test_budget_matched_stock_baseline(planned_dataset):
    """nnUNetPlannerCPU: stock U-Net plans at the CPU preset's patch and batch; the stock trainer variant takes its
    budget from a plans variant."""
    from mapseg_nnunet.planning.presets import PRESETS
    root, env = planned_dataset
    run(["mapseg_plan_and_preprocess", "-d", "901", "-pl", "nnUNetPlannerCPU", "-np", "1", "-npfp", "1",
         "--no_pbar"], env, cwd=root)
    folder = glob.glob(str(root / "nnUNet_preprocessed" / "Dataset901_*"))[0]
    config = json.load(open(os.path.join(folder, "nnUNetPlansCPU.json")))["configurations"]["3d_fullres"]
    assert config["patch_size"] == list(PRESETS["cpu"].patch_size)
    assert config["batch_size"] == PRESETS["cpu"].batch_size
    assert config["architecture"]["network_class_name"].endswith("PlainConvUNet")
    assert config["normalization_schemes"] == ["ZScoreNormalization"]
    run(["mapseg_plans_variant", "-d", "901", "-p", "nnUNetPlansCPU", "-o", "nnUNetPlansCPU_budget", "--set",
         "num_epochs=1", "num_iterations_per_epoch=3", "num_val_iterations_per_epoch=1", "final_validation=false"],
        env, cwd=root)
    run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", "nnUNetTrainer_settingsFromPlans", "-p",
         "nnUNetPlansCPU_budget", "-device", "cpu"], env, cwd=root)
    log = _log(root, 901, "nnUNetTrainer_settingsFromPlans", "nnUNetPlansCPU_budget")
    assert "num_iterations_per_epoch = 3 (default 250)" in log
    assert "Epoch 0" in log and "Epoch 1" not in log
    assert "Final validation skipped" in log
    assert not glob.glob(str(root / "nnUNet_results" / "Dataset901_*" / "nnUNetTrainer_settingsFromPlans__*" /
                              "fold_0" / "validation" / "summary.json"))
