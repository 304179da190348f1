"""The benchmarks' budgets and their runner: stock nnU-Net commands (plan, plans variants, train) on the demo
cohort in a work folder, each command's output in ``WORK/logs`` and its wall time in ``WORK/timings.json``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .cohort import ORACLES, PLANNERS, PLANS, SOURCE, STOCK_PLANS, TARGETS


@dataclass
class Budget:
    """Iterations of every run; one epoch = ``iterations`` steps + ``val`` validation steps."""
    seeds: List[int]
    epochs: int                # source-side runs: floor, source-only, UDA, oracle
    iterations: int
    warmup_epochs: int         # UDA: source-only warm-up before the target terms
    tta_epochs: int            # test-time UDA stage 2
    mae_epochs: int
    fed_rounds: int
    fed_iterations: int        # server (T_s) and client (T_t) steps per round
    val: int = 4
    lr: float = 1e-3
    ablations: Dict[str, Dict] = field(default_factory=dict)
    selection: bool = True
    speed_repeats: int = 5
    reference_seeds: Optional[List[int]] = None  # seeds of floor and oracle (default: all seeds)


# 90 minutes on 2 cores: 120 iterations per source-side run, floor and oracle on the first seed only
FULL = Budget(seeds=[0, 1, 2], epochs=4, iterations=30, warmup_epochs=1, tta_epochs=2, mae_epochs=4,
              fed_rounds=3, fed_iterations=15, reference_seeds=[0],
              ablations={"no MAE init": {"pretrained": False}, "no GLC": {"trainer": "nnUNetTrainerMAPSegUDA_noGLC"},
                         "mask ratio 0.5": {"settings": {"masking.ratio": 0.5}},
                         "cube 4": {"settings": {"masking.local_cube": 4}}})
QUICK = Budget(seeds=[0], epochs=2, iterations=4, warmup_epochs=1, tta_epochs=1, mae_epochs=1, fed_rounds=1,
               fed_iterations=2, val=1,
               ablations={"no GLC": {"trainer": "nnUNetTrainerMAPSegUDA_noGLC"},
                          "mask ratio 0.5": {"settings": {"masking.ratio": 0.5}}},
               speed_repeats=2)


class Runner:
    """Runs the stock commands of a benchmark in ``work`` (its own nnUNet_raw / _preprocessed / _results)."""

    def __init__(self, work: str, budget: Budget, quick: bool):
        self.work, self.budget, self.quick = work, budget, quick
        self.t0 = time.time()
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        bin_dir = os.path.dirname(sys.executable)
        self.env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                    "nnUNet_raw": os.path.join(work, "nnUNet_raw"),
                    "nnUNet_preprocessed": os.path.join(work, "nnUNet_preprocessed"),
                    "nnUNet_results": os.path.join(work, "nnUNet_results"),
                    "nnUNet_compile": "f", "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1"}
        out = subprocess.run(["mapseg_nnunet", "env"], env=self.env, capture_output=True, text=True, check=True)
        key, value = out.stdout.strip().removeprefix("export ").split("=", 1)
        self.env[key] = value.strip("'")
        os.environ.update({k: self.env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", key)})
        self.timings_file = os.path.join(work, "timings.json")  # wall time of every command, across re-runs
        self.timings: Dict[str, float] = json.load(open(self.timings_file)) if os.path.isfile(self.timings_file) \
            else {}

    # ---- plumbing
    def say(self, message: str) -> None:
        minutes = (time.time() - self.t0) / 60
        print(f"[{minutes:5.1f} min] {message}", flush=True)

    def sh(self, name: str, cmd: List[str], env: Optional[dict] = None) -> None:
        """Run a stock command, its output in logs/NAME.log; a failure names the command and the log."""
        log = os.path.join(self.logs, name + ".log")
        start = time.time()
        with open(log, "w") as f:
            proc = subprocess.run(cmd, env=env or self.env, stdout=f, stderr=subprocess.STDOUT)
        self.timings[name] = time.time() - start
        with open(self.timings_file, "w") as f:
            json.dump(self.timings, f, indent=1)
        if proc.returncode != 0:
            tail = open(log).read()[-3000:]
            raise SystemExit(f"ERROR: {' '.join(cmd)} failed ({proc.returncode}); log {log}:\n{tail}")

    def save_result(self, out: str, name: str, result: dict, write_markdown) -> None:
        """A benchmark script's result: ``out/NAME.json`` and the report ``write_markdown(out, result)`` writes."""
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(result, f, indent=1)
        write_markdown(out, result)
        self.say(f"done: {os.path.join(out, name + '.md')}")

    def folder(self, dataset: int, sub: str = "nnUNet_raw") -> str:
        base = self.env[sub]
        return os.path.join(base, next(d for d in os.listdir(base) if d.startswith(f"Dataset{dataset:03d}_")))

    def model_folder(self, dataset: int, trainer: str, plans: str) -> str:
        return os.path.join(self.env["nnUNet_results"], os.path.basename(self.folder(dataset)),
                            f"{trainer}__{plans}__3d_fullres")

    def variant(self, dataset: int, base: str, name: str, settings: dict) -> str:
        self.sh(f"variant_{dataset}_{name}", ["mapseg_plans_variant", "-d", str(dataset), "-p", base, "-o", name,
                                              "--overwrite", "--set"] +
                [f"{k}={json.dumps(v)}" for k, v in settings.items()])
        return name

    def train(self, name: str, dataset: int, trainer: str, plans: str, fold: str = "0",
              pretrained: Optional[str] = None) -> str:
        """``nnUNetv2_train``, unless its checkpoint_final exists; returns the model folder."""
        folder = self.model_folder(dataset, trainer, plans)
        if os.path.isfile(os.path.join(folder, f"fold_{fold}", "checkpoint_final.pth")):
            self.say(f"{name}: done earlier ({folder})")
            return folder
        self.say(f"{name}: nnUNetv2_train {dataset} 3d_fullres {fold} -tr {trainer} -p {plans} (log: "
                 f"{os.path.join(self.logs, name + '.log')})")
        cmd = ["nnUNetv2_train", str(dataset), "3d_fullres", fold, "-tr", trainer, "-p", plans, "-device", "cpu"]
        if pretrained:
            cmd += ["-pretrained_weights", pretrained]
        self.sh(name, cmd)
        return folder

    # ---- settings of the runs
    def source_settings(self, seed: int, **extra) -> dict:
        b = self.budget
        return {"seed": seed, "num_epochs": b.epochs, "num_iterations_per_epoch": b.iterations,
                "num_val_iterations_per_epoch": b.val, "initial_lr": b.lr, "final_validation": False, **extra}

    def stock_settings(self, seed: int) -> dict:
        b = self.budget  # nnU-Net's own optimiser and learning rate; only budget and seed are set
        return {"seed": seed, "num_epochs": b.epochs, "num_iterations_per_epoch": b.iterations,
                "num_val_iterations_per_epoch": b.val, "final_validation": False}

    # ---- steps
    def setup(self) -> None:
        marker = os.path.join(self.work, ".setup_done")
        if os.path.isfile(marker):
            self.say("set-up: done earlier")
            return
        self.say("set-up: demo cohort (+ labeled target copies for the oracle), plans, target registration")
        self.sh("cohort", [sys.executable, "-m", "mapseg_nnunet.dataset_conversion.demo_brain", "-d", str(SOURCE),
                           *map(str, TARGETS), "--oracle_ids", *map(str, ORACLES), "--overwrite"])
        self.sh("plan_mapseg", ["mapseg_plan_and_preprocess", "-d", str(SOURCE), "-pl", "MAPSegPlannerCPU", "-np",
                                "1", "-npfp", "1", "--no_pbar"])
        self.sh("register", ["mapseg_register_targets", "-s", str(SOURCE), "-t", *map(str, TARGETS), "-p", PLANS,
                             "--no_pbar"])
        self.sh("plan_stock", ["mapseg_plan_and_preprocess", "-d", str(SOURCE), *map(str, ORACLES), "-pl",
                               "nnUNetPlannerCPU", "-np", "1", "-npfp", "1", "--no_pbar"])
        open(marker, "w").write("ok\n")

    def plan(self, plans: str) -> str:
        """The source planned and preprocessed with the MAPSeg CPU ``plans`` and the targets registered to them (once;
        ``setup`` does ``MAPSegPlansCPU``); returns ``plans``."""
        marker = os.path.join(self.work, f".plans_{plans}_done")
        if plans == PLANS or os.path.isfile(marker):
            return plans
        self.sh(f"plan_{plans}", ["mapseg_plan_and_preprocess", "-d", str(SOURCE), "-pl", PLANNERS[plans], "-np", "1",
                                  "-npfp", "1", "--no_pbar"])
        self.sh(f"register_{plans}", ["mapseg_register_targets", "-s", str(SOURCE), "-t", *map(str, TARGETS), "-p",
                                      plans, "--no_pbar"])
        open(marker, "w").write("ok\n")
        return plans

    def mae(self) -> str:
        b = self.budget
        plans = self.variant(SOURCE, PLANS, f"{PLANS}_bench_mae", {"seed": 0, "num_epochs": b.mae_epochs,
                                                                   "num_iterations_per_epoch": b.iterations,
                                                                   "num_val_iterations_per_epoch": b.val})
        folder = self.train("mae", SOURCE, "nnUNetTrainerMAPSegMAE", plans, fold="all")
        return os.path.join(folder, "fold_all", "checkpoint_final.pth")

    def seed_runs(self, seed: int, mae: str) -> Dict[str, str]:
        """Train floor, source-only, UDA, oracle and test-time UDA for one seed; returns {method: model folder}
        (test-time UDA: {'tta/<target>': folder})."""
        b = self.budget
        models = {}
        references = seed in (b.reference_seeds if b.reference_seeds is not None else b.seeds)
        if references:
            stock = self.variant(SOURCE, STOCK_PLANS, f"{STOCK_PLANS}_bench_s{seed}", self.stock_settings(seed))
            models["floor"] = self.train(f"s{seed}_floor", SOURCE, "nnUNetTrainer_settingsFromPlans", stock)
        plans = self.variant(SOURCE, PLANS, f"{PLANS}_bench_s{seed}",
                             self.source_settings(seed, warmup_iterations=b.warmup_epochs * b.iterations,
                                                  keep_epoch_checkpoints=b.selection and seed == b.seeds[0]))
        models["source_only"] = self.train(f"s{seed}_source_only", SOURCE, "nnUNetTrainerMAPSegUDA_noMPL", plans,
                                           pretrained=mae)
        models["uda"] = self.train(f"s{seed}_uda", SOURCE, "nnUNetTrainerMAPSegUDA", plans, pretrained=mae)
        for target, oracle in zip(TARGETS, ORACLES) if references else ():
            oplans = self.variant(oracle, STOCK_PLANS, f"{STOCK_PLANS}_bench_s{seed}", self.stock_settings(seed))
            models[f"oracle/{target}"] = self.train(f"s{seed}_oracle_{target}", oracle,
                                                    "nnUNetTrainer_settingsFromPlans", oplans)
        stage1 = os.path.join(models["source_only"])
        for target in TARGETS:
            tplans = f"{plans}_tta"
            if not os.path.isfile(os.path.join(self.model_folder(target, "nnUNetTrainerMAPSegTTA", tplans), "fold_0",
                                               "checkpoint_final.pth")):
                self.sh(f"s{seed}_receive_{target}", ["mapseg_receive_source_model", "-t", str(target), "-m", stage1,
                                                      "-f", "0", "--no_pbar"])
                self.variant(target, plans, tplans, {"seed": seed, "num_epochs": b.tta_epochs,
                                                     "num_iterations_per_epoch": b.iterations,
                                                     "num_val_iterations_per_epoch": b.val, "initial_lr": b.lr})
            models[f"tta/{target}"] = self.train(f"s{seed}_tta_{target}", target, "nnUNetTrainerMAPSegTTA", tplans)
        return models

    def federated(self, seed: int, mae: str) -> str:
        b = self.budget
        settings = {"seed": seed, "num_epochs": b.fed_rounds, "num_iterations_per_epoch": b.fed_iterations,
                    "client_iterations": b.fed_iterations, "num_val_iterations_per_epoch": b.val,
                    "initial_lr": b.lr, "final_lr": b.lr / 100, "final_validation": False}
        plans = f"{PLANS}_bench_fed_s{seed}"
        for dataset in (SOURCE, *TARGETS):
            self.variant(dataset, PLANS, plans, settings)
        folder = self.model_folder(SOURCE, "nnUNetTrainerMAPSegFed", plans)
        if os.path.isfile(os.path.join(folder, "fold_0", "checkpoint_final.pth")):
            self.say("fed: done earlier")
            return folder
        self.say(f"fed: mapseg_federated_simulation, {b.fed_rounds} rounds, clients {TARGETS}")
        self.sh(f"s{seed}_fed", ["mapseg_federated_simulation", "-s", str(SOURCE), "-t", *map(str, TARGETS), "-p",
                                 plans, "-tr", "nnUNetTrainerMAPSegFed", "-device", "cpu", "-pretrained_weights", mae,
                                 "--workdir", os.path.join(self.work, "federation")])
        return folder

    def ablations(self, mae: str) -> Dict[str, str]:
        b, seed = self.budget, self.budget.seeds[0]
        models = {}
        for name, spec in b.ablations.items():
            tag = name.replace(" ", "_").replace(".", "")
            plans = self.variant(SOURCE, PLANS, f"{PLANS}_bench_ablation_{tag}",
                                 self.source_settings(seed, warmup_iterations=b.warmup_epochs * b.iterations,
                                                      **spec.get("settings", {})))
            models[name] = self.train(f"ablation_{tag}", SOURCE, spec.get("trainer", "nnUNetTrainerMAPSegUDA"), plans,
                                      pretrained=mae if spec.get("pretrained", True) else None)
        return models
