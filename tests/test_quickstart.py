"""The README's CPU quick-start, run as written (budget numbers shrunk) on a small dataset built here."""
import os
import re
import subprocess

from nnunet_fixtures import nnunet_env

from mapseg_nnunet.data.synthetic import write_synthetic_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET = "num_epochs=20 num_iterations_per_epoch=50"
TEST_BUDGET = "num_epochs=1 num_iterations_per_epoch=2 num_val_iterations_per_epoch=1"


def cpu_quickstart() -> str:
    readme = open(os.path.join(REPO, "README.md")).read()
    block = re.search(r"\*\*On a CPU\*\*.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README has no CPU quick-start block"
    return block.group(1)


def test_readme_cpu_quickstart_runs_as_written(tmp_path):
    env = nnunet_env(tmp_path)
    write_synthetic_dataset(env["nnUNet_raw"], 1, name="X", num_cases=2, shape=(40, 40, 40))
    target = write_synthetic_dataset(env["nnUNet_raw"], 2, name="Y", num_cases=2, shape=(40, 40, 40), seed=2,
                                     labeled=False)
    script = cpu_quickstart()
    assert script.count(BUDGET) == 2  # the test shrinks exactly the README's budgets
    script = script.replace(BUDGET, TEST_BUDGET)
    script = script.replace("export nnUNet_n_proc_DA=1", "export nnUNet_n_proc_DA=0")  # no worker start-up
    script = script.replace(" OUT_stock ", f" {tmp_path / 'out_stock'} ").replace(" OUT ", f" {tmp_path / 'out'} ")
    script = script.replace(" IN ", f" {os.path.join(target, 'imagesTr')} ")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for out in ("out", "out_stock"):
        predictions = sorted(f for f in os.listdir(tmp_path / out) if f.endswith(".nii.gz"))
        assert predictions == ["case000.nii.gz", "case001.nii.gz"], (out, predictions)
