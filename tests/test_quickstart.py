"""The README's CPU quick-start, run as written (budget numbers shrunk) on a small dataset built here."""
import os
import re
import shlex
import subprocess

from nnunet_fixtures import nnunet_env

from mapseg_nnunet.data.synthetic import write_synthetic_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET = "num_epochs=20 num_iterations_per_epoch=50"
TEST_BUDGET = "num_epochs=1 num_iterations_per_epoch=2 num_val_iterations_per_epoch=1"
WARMUP, TEST_WARMUP = "warmup_iterations=500", "warmup_iterations=1"


def cpu_quickstart() -> str:
    readme = open(os.path.join(REPO, "README.md")).read()
    block = re.search(r"\*\*On a CPU\*\*.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README has no CPU quick-start block"
    return block.group(1)


def _option(command: list, flag: str):
    return command[command.index(flag) + 1] if flag in command else None


def test_readme_predicts_the_folds_it_trained():
    """Every nnUNetv2_predict in the README's bash blocks names (-f) the fold that its nnUNetv2_train of the same
    trainer and plans trained: without -f stock nnU-Net looks for folds 0-4 and stops at the first missing one."""
    readme = open(os.path.join(REPO, "README.md")).read()
    checked = 0
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        commands = [shlex.split(line.split("#")[0]) for line in block.replace("\\\n", " ").splitlines()]
        trained = {(c[5], c[7]): c[3] for c in commands if c[:1] == ["nnUNetv2_train"] and c[4] == "-tr"
                   and c[6] == "-p"}
        for c in commands:
            if c[:1] == ["nnUNetv2_predict"] and (_option(c, "-tr"), _option(c, "-p")) in trained:
                assert _option(c, "-f") == trained[_option(c, "-tr"), _option(c, "-p")], " ".join(c)
                checked += 1
    assert checked >= 2  # the GPU and the CPU quick starts at least


def test_readme_cpu_quickstart_runs_as_written(tmp_path):
    env = nnunet_env(tmp_path)
    write_synthetic_dataset(env["nnUNet_raw"], 1, name="X", num_cases=2, shape=(40, 40, 40))
    target = write_synthetic_dataset(env["nnUNet_raw"], 2, name="Y", num_cases=2, shape=(40, 40, 40), seed=2,
                                     labeled=False)
    script = cpu_quickstart()
    assert script.count(BUDGET) == 2  # the test shrinks exactly the README's budgets
    script = script.replace(BUDGET, TEST_BUDGET)
    assert script.count(WARMUP) == 1  # the UDA warm-up, below the budget as in the README
    script = script.replace(WARMUP, TEST_WARMUP)
    script = script.replace("export nnUNet_n_proc_DA=1", "export nnUNet_n_proc_DA=0")  # no worker start-up
    script = script.replace(" OUT_stock ", f" {tmp_path / 'out_stock'} ").replace(" OUT ", f" {tmp_path / 'out'} ")
    script = script.replace(" IN ", f" {os.path.join(target, 'imagesTr')} ")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for out in ("out", "out_stock"):
        predictions = sorted(f for f in os.listdir(tmp_path / out) if f.endswith(".nii.gz"))
        assert predictions == ["case000.nii.gz", "case001.nii.gz"], (out, predictions)
    # the README's UDA adapted (after its warm-up): the trainer's closing line says how many iterations did
    log = next((tmp_path / "nnUNet_results" / "Dataset001_X" / "nnUNetTrainerMAPSegUDA__MAPSegPlansCPU_uda__3d_fullres"
                / "fold_all").glob("training_log_*.txt")).read_text()
    assert "Adaptation: 1 of 2 iterations trained the target terms" in log and "never adapts" not in log


def _script_arguments(script: str, module: str, env: dict) -> list:
    """The arguments ``scripts/<script>`` passes to ``python -m <module>``, expanded by bash with the script's
    variable defaults (and ``env``)."""
    lines = open(os.path.join(REPO, "scripts", script)).read().splitlines()
    call = next(i for i, line in enumerate(lines) if line.startswith(f"python -m {module} "))
    assignments = [line for line in lines[:call] if re.match(r"^[A-Z_]+=", line)]
    expand = "\n".join(assignments + [f"set -- {lines[call][len(f'python -m {module} '):]}", 'printf "%s\\n" "$@"'])
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", expand], env={**os.environ, **env}, capture_output=True,
                          text=True, check=True)
    return proc.stdout.split()


def test_demo_scripts_generate_a_cohort_the_converter_accepts():
    """make demo (the T2w target) and make demo-full (all three) call the demo converter with arguments it
    accepts: the source and the three targets in their roles, whatever DEMO_TARGETS the demo then uses."""
    from mapseg_nnunet.dataset_conversion.demo_brain import DEFAULT_IDS, parse_arguments
    for targets in ({}, {"DEMO_TARGETS": "952 953 954"}):
        args = parse_arguments(_script_arguments("demo.sh", "mapseg_nnunet.dataset_conversion.demo_brain",
                                                 targets) + ["-o", "unused"])
        assert tuple(args.d) == DEFAULT_IDS
