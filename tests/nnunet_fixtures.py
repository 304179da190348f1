"""Shared test helpers and fixtures (imported by the tests and, for the fixtures, by ``conftest.py``): an nnU-Net
folder tree in a temporary directory, a synthetic labeled dataset planned with MAPSegPlannerCPU, and a helper that
runs the real console scripts in subprocesses on the CPU."""
import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


def nnunet_env(root, **extra):
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results"),
        "nnUNet_n_proc_DA": "0",
        "nnUNet_compile": "f",
        "nnUNet_def_n_proc": "1",
        "PATH": BIN + os.pathsep + env.get("PATH", ""),
    })
    env.pop("nnUNet_extTrainer", None)
    env.update(extra)
    return env


def run(cmd, env, cwd, check=True, timeout=900):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                             f"\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def with_ext_trainer(env):
    out = run([os.path.join(BIN, "mapseg_nnunet"), "env"], env, cwd="/")
    key, value = out.stdout.strip().removeprefix("export ").split("=", 1)
    return {**env, key: value.strip("'")}


@pytest.fixture(scope="session")
def planned_dataset(tmp_path_factory):
    """Dataset 901 (6 synthetic 52^3 cases, 3 classes) planned and preprocessed with MAPSegPlannerCPU."""
    from mapseg_nnunet.data.synthetic import write_synthetic_dataset
    root = tmp_path_factory.mktemp("nnunet")
    env = with_ext_trainer(nnunet_env(root))
    write_synthetic_dataset(env["nnUNet_raw"], 901)
    run(["mapseg_plan_and_preprocess", "-d", "901", "-pl", "MAPSegPlannerCPU", "-np", "1", "-npfp", "1",
         "--no_pbar"], env, cwd=root)
    return root, env


@pytest.fixture(scope="session")
def source_with_target(planned_dataset):
    """Dataset 901 with an unlabeled synthetic target (913) registered to it."""
    from mapseg_nnunet.data.synthetic import write_synthetic_dataset
    root, env = planned_dataset
    write_synthetic_dataset(env["nnUNet_raw"], 913, name="TargetC", labeled=False, seed=913)
    run(["mapseg_register_targets", "-s", "901", "-t", "913", "-p", "MAPSegPlansCPU", "--no_pbar"], env, cwd=root)
    return root, env


MAPSEG_SMOKE = "nnUNetTrainerMAPSegUDA_smoke"


@pytest.fixture(scope="session")
def trained_mapseg_smoke(planned_dataset):
    """``nnUNetv2_train 901 3d_fullres 0 -tr nnUNetTrainerMAPSegUDA_smoke -p MAPSegPlansCPU`` (stock command,
    trained once per session, when missing); returns ``(root, env, fold folder)``."""
    root, env = planned_dataset
    fold = os.path.join(env["nnUNet_results"], "Dataset901_Synthetic", f"{MAPSEG_SMOKE}__MAPSegPlansCPU__3d_fullres",
                        "fold_0")
    if not os.path.isfile(os.path.join(fold, "checkpoint_final.pth")):
        run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", MAPSEG_SMOKE, "-p", "MAPSegPlansCPU", "-device",
             "cpu"], env, cwd=root)
    return root, env, fold
