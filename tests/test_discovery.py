"""Stock nnU-Net commands find the plugin's classes, with at most nnUNet_extTrainer set."""
import os
import sys

from nnunet_fixtures import BIN, nnunet_env, run, with_ext_trainer

from mapseg_nnunet.cli.plan_and_preprocess import PLANNERS
from mapseg_nnunet.training.trainer_lookup import EXT_DIR
from mapseg_nnunet.trainers import trainer_classes

TRAINER_NAMES = sorted(trainer_classes())


def test_env_puts_shim_first_and_keeps_other_entries(tmp_path):
    env = nnunet_env(tmp_path, nnUNet_extTrainer="/opt/site_trainers")
    out = run([os.path.join(BIN, "mapseg_nnunet"), "env"], env, cwd=tmp_path).stdout.strip()
    assert out == f"export nnUNet_extTrainer={EXT_DIR}{os.pathsep}/opt/site_trainers"
    assert sorted(os.listdir(EXT_DIR)) == ["mapseg_nnunet_trainers.py"]  # dedicated shim folder, one module


LOOKUP = r"""
import pickle, sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from mapseg_nnunet.trainers import trainer_classes
TRAINER_NAMES = sorted(trainer_classes())
assert len(TRAINER_NAMES) >= 15, TRAINER_NAMES
for name in TRAINER_NAMES:
    cls = recursive_find_trainer_class_by_name(name)
    assert cls.__module__.startswith("mapseg_nnunet.trainers."), cls.__module__
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert cls is getattr(sys.modules[cls.__module__], name)
assert "mapseg_nnunet_trainers" not in sys.modules  # nnU-Net dropped the shim module again
print("FOUND", len(TRAINER_NAMES))
"""


def test_stock_lookup_finds_canonical_picklable_trainers(tmp_path):
    env = with_ext_trainer(nnunet_env(tmp_path))
    out = run([sys.executable, "-c", LOOKUP], env, cwd=tmp_path)
    assert f"FOUND {len(TRAINER_NAMES)}" in out.stdout


def test_lookup_fails_without_ext_trainer(tmp_path):
    env = nnunet_env(tmp_path)
    out = run([sys.executable, "-c", LOOKUP], env, cwd=tmp_path, check=False)
    assert out.returncode != 0 and "Could not find requested nnunet trainer" in out.stderr


def test_doctor_reports_every_class(tmp_path):
    env = with_ext_trainer(nnunet_env(tmp_path))
    out = run([os.path.join(BIN, "mapseg_nnunet"), "doctor"], env, cwd=tmp_path)
    for name in TRAINER_NAMES + list(PLANNERS) + ["GLCUNet", "MAPSegNet"]:
        assert name in out.stdout
    assert "NOT FOUND" not in out.stdout and out.stdout.strip().endswith("OK")


def test_doctor_flags_missing_set_up(tmp_path):
    env = nnunet_env(tmp_path)
    del env["nnUNet_results"]
    out = run([os.path.join(BIN, "mapseg_nnunet"), "doctor"], env, cwd=tmp_path, check=False)
    assert out.returncode == 1 and "nnUNet_results" in out.stdout and "problem" in out.stdout


def test_no_generic_top_level_modules_installed(tmp_path):
    code = ("import importlib.util as u; "
            "assert u.find_spec('trainers') is None and u.find_spec('planners') is None "
            "and u.find_spec('dataset_conversion') is None; "
            "assert u.find_spec('mapseg_nnunet.trainers') and u.find_spec('mapseg_nnunet.planners'); print('ok')")
    assert run([sys.executable, "-c", code], nnunet_env(tmp_path), cwd=tmp_path).stdout.strip() == "ok"


def test_test_time_trainer_without_a_source_model_says_what_to_run(planned_dataset):
    root, env = planned_dataset
    out = run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", "nnUNetTrainerMAPSegTTA", "-p", "MAPSegPlansCPU",
               "-device", "cpu"], env, cwd=root, check=False)
    assert out.returncode != 0
    assert "carry no stage-1 source model" in out.stderr and "mapseg_receive_source_model -t" in out.stderr


def test_trainer_lookup_retries_nnunets_class_search_race_only(monkeypatch):
    """nnU-Net's class search fails when another thread imports during it (Flower's simulation); build_trainer
    retries that failure and nothing else."""
    import pytest
    import torch
    from nnunetv2.run import run_training
    from mapseg_nnunet.training.trainer_lookup import SEARCH_RACE, build_trainer
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError(SEARCH_RACE)
        return "trainer"
    monkeypatch.setattr(run_training, "get_trainer_from_args", flaky)
    assert build_trainer("1", "T", "P", "3d_fullres", 0, torch.device("cpu")) == "trainer" and len(calls) == 2

    def broken(*args, **kwargs):
        raise RuntimeError("unknown trainer setting")
    monkeypatch.setattr(run_training, "get_trainer_from_args", broken)
    with pytest.raises(RuntimeError, match="unknown trainer setting"):
        build_trainer("1", "T", "P", "3d_fullres", 0, torch.device("cpu"))
