"""The benchmarks' budgets and their runner: stock nnU-Net commands (plan, plans variants, train) on the demo
cohort in a work folder, each command's output in ``WORK/logs`` and its wall time in ``WORK/timings.json``."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from mapseg_nnunet.training.variants import CONTRAST_RANDOMIZATION

from .cohort import ORACLES, PLANNERS, SOURCE, STOCK_PLANS, TARGETS, UNET_PLANS
from .study import save_result


@dataclass
class Budget:
    """Iterations of every run; one epoch = ``iterations`` steps + ``val`` validation steps."""
    seeds: List[int]
    epochs: int                # source-side runs: floor, oracle, source-only (the UDA teacher's warm-up)
    iterations: int
    adapt_epochs: int          # UDA: epochs with the target terms after the source-only run it continues
    tta_epochs: int            # test-time UDA stage 2
    mae_epochs: int
    fed_rounds: int
    fed_iterations: int        # server (T_s) and client (T_t) steps per round
    # EMA of the round's teachers: the paper's 'large' (alpha 0.999) moves a teacher 1 % of the way to its student
    # over a 10-step round; 'small' (0.99) moves it as far (10 %) as 0.999 does over the paper's ~100-step rounds
    fed_ema_schedule: str = "small"
    plans: str = UNET_PLANS    # the MAPSeg plans of the table (their backbone names the rows)
    val: int = 4
    lr: float = 1e-3
    ablations: List[str] = field(default_factory=list)  # names in ABLATIONS run by default
    selection: bool = False  # --selection: keep UDA's per-epoch checkpoints and score each on the targets
    speed_repeats: int = 5
    # seeds of floor, oracle, plain source-only and test-time UDA (default: all seeds)
    reference_seeds: Optional[List[int]] = None
    # seeds the ablations run on (default: the first seed); on several seeds each ablation gets a paired interval
    # against the iteration-matched control in results.json's ``paired`` (the candidates of a method change)
    ablation_seeds: Optional[List[int]] = None

    def ablation_seed_list(self) -> List[int]:
        return self.seeds[:1] if self.ablation_seeds is None else [s for s in self.seeds if s in self.ablation_seeds]

    def is_reference(self, seed: int) -> bool:
        """Whether ``seed`` runs the reference models and test-time UDA."""
        return self.reference_seeds is None or seed in self.reference_seeds


# Ablations on the first seed, each against the full method (contrast-randomized teacher, hard masked
# pseudo-labels, MAE init, GLC, mask 0.7, cube 8): what continues from which source-only model, and with what.
# 'teacher': the source-only model the adaptation continues ('cr': contrast-randomized, 'plain': without, 'cr_scratch':
# contrast-randomized without MAE init); 'trainer': the adapting trainer; 'settings': trainer settings on top.
ABLATIONS = {
    "no contrast randomization": {"teacher": "plain", "contrast_randomization": False},
    "no MAE init": {"teacher": "cr_scratch"},
    "no GLC while adapting": {"teacher": "cr", "trainer": "nnUNetTrainerMAPSegUDA_noGLC"},
    "confidence-weighted pseudo-labels": {"teacher": "cr", "settings": {"pseudo_labeling.weighting": "confidence"}},
    "class-share-aligned pseudo-labels": {"teacher": "cr", "settings": {"pseudo_labeling.alignment": "source_shares"}},
    # the paper's EMA (0.999) moves the teacher 11 % of the way to the student over 120 adapting steps; 0.99: 70 %
    "EMA 0.99 (a teacher that follows)": {"teacher": "cr", "settings": {"ema_schedule": "small"}},
    # the target terms at full weight from the first adapting step, or ramped up (mean teacher) over half of them
    "target ramp-up over 60 iterations": {"teacher": "cr", "settings": {"target_rampup_iterations": 60}},
    # the reference code's adaptation step keeps only the masked source pass
    "masked source pass only while adapting": {"teacher": "cr",
                                               "settings": {"loss_weights.source_unmasked_after_warmup": False}},
    "mask ratio 0.5": {"teacher": "cr", "settings": {"masking.ratio": 0.5}},
    "cube 4": {"teacher": "cr", "settings": {"masking.local_cube": 4}},
}

# 90 minutes on 2 cores for the main table (3 seeds, the U-Net path): 240 source iterations (the U-Net's pseudo Dice
# plateau, benchmarks/results/learning_curve/learning_curve_MAPSegResEncPlansCPU.md) + 120 adapting and the
# iteration-matched control on every seed; floor, oracle, the plain source-only model and test-time UDA on the first
# seed (80 min from scratch; test-time UDA on every seed would add about 8). The ablations are a second invocation in
# the same work folder (make benchmarks-ablations), which reuses every finished training and prediction.
FULL = Budget(seeds=[0, 1, 2], epochs=6, iterations=40, adapt_epochs=3, tta_epochs=1, mae_epochs=3, fed_rounds=3,
              fed_iterations=10, reference_seeds=[0], speed_repeats=3)
QUICK = Budget(seeds=[0], epochs=2, iterations=4, adapt_epochs=1, tta_epochs=1, mae_epochs=1, fed_rounds=1,
               fed_iterations=2, val=1, ablations=["cube 4", "mask ratio 0.5"],
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

    @classmethod
    def for_study(cls, work: str, plans: Optional[str] = None) -> "Runner":
        """A study's runner on the full budget in ``work``: the demo cohort set up and ``plans`` (default: the
        budget's) planned."""
        runner = cls(os.path.abspath(work), copy.deepcopy(FULL), quick=False)
        runner.setup()
        runner.plan(plans or runner.budget.plans)
        return runner

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
        """A study's result files (:func:`benchmarks.study.save_result`), announced with this runner's clock."""
        save_result(out, name, result, write_markdown, say=self.say)

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
        self.discard_if_settings_changed(name, folder, dataset, plans)
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

    def discard_if_settings_changed(self, name: str, folder: str, dataset: int, plans: str) -> None:
        """A model folder trained with other trainer settings than the plans variant has now (a budget changed
        since) is removed, so that it trains again instead of being reported as "done earlier"."""
        import shutil
        recorded = os.path.join(folder, "plans.json")
        if not os.path.isfile(recorded):
            return
        current = os.path.join(self.folder(dataset, "nnUNet_preprocessed"), plans + ".json")

        def settings(path):
            return json.load(open(path))["configurations"]["3d_fullres"].get("trainer_settings")

        if settings(recorded) != settings(current):
            self.say(f"{name}: {folder} was trained with other settings than {plans} has now; training again")
            shutil.rmtree(folder)

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
        self.say("set-up: demo cohort (+ labeled target copies for the oracle), stock plans")
        self.sh("cohort", [sys.executable, "-m", "mapseg_nnunet.dataset_conversion.demo_brain", "-d", str(SOURCE),
                           *map(str, TARGETS), "--oracle_ids", *map(str, ORACLES), "--overwrite"])
        self.sh("plan_stock", ["mapseg_plan_and_preprocess", "-d", str(SOURCE), *map(str, ORACLES), "-pl",
                               "nnUNetPlannerCPU", "-np", "1", "-npfp", "1", "--no_pbar"])
        open(marker, "w").write("ok\n")

    def plan(self, plans: str) -> str:
        """The source planned and preprocessed with the MAPSeg CPU ``plans`` and the targets registered to them
        (once); returns ``plans``."""
        marker = os.path.join(self.work, f".plans_{plans}_done")
        if os.path.isfile(marker):
            return plans
        self.sh(f"plan_{plans}", ["mapseg_plan_and_preprocess", "-d", str(SOURCE), "-pl", PLANNERS[plans], "-np", "1",
                                  "-npfp", "1", "--no_pbar"])
        self.sh(f"register_{plans}", ["mapseg_register_targets", "-s", str(SOURCE), "-t", *map(str, TARGETS), "-p",
                                      plans, "--no_pbar"])
        open(marker, "w").write("ok\n")
        return plans

    def mae(self, seed: int) -> str:
        """The MAE checkpoint of ``seed`` on the budget's plans (source + registered targets): one pretraining per
        seed, so that each seed's chain (MAE -> teacher -> UDA / control / test-time / federated) is independent of
        the others."""
        b = self.budget
        plans = self.variant(SOURCE, b.plans, f"{b.plans}_bench_mae_s{seed}", {
            "seed": seed, "num_epochs": b.mae_epochs, "num_iterations_per_epoch": b.iterations,
            "num_val_iterations_per_epoch": b.val})
        folder = self.train(f"s{seed}_mae", SOURCE, "nnUNetTrainerMAPSegMAE", plans, fold="all")
        return os.path.join(folder, "fold_all", "checkpoint_final.pth")

    def bench_plans(self, name: str, seed: int) -> str:
        """The plans variant of run ``name`` (``source_only_cr``, ``uda_cr``, ...) of ``seed``."""
        return f"{self.budget.plans}_bench_{name}_s{seed}"

    def source_only(self, seed: int, mae: Optional[str], contrast_randomization: bool, tag: str = "") -> str:
        """``_noMPL`` on the budget's plans for ``epochs``, from the MAE encoder (or nnU-Net's initialisation), with or
        without contrast randomization of the source views; returns the model folder."""
        b = self.budget
        extra = CONTRAST_RANDOMIZATION if contrast_randomization else {}
        name = f"source_only{'_cr' if contrast_randomization else ''}{tag}"
        plans = self.variant(SOURCE, b.plans, self.bench_plans(name, seed),
                             self.source_settings(seed, warmup_iterations=b.epochs * b.iterations, **extra))
        return self.train(f"s{seed}_{name}", SOURCE, "nnUNetTrainerMAPSegUDA_noMPL", plans, pretrained=mae)

    def adapt(self, name: str, seed: int, teacher: str, trainer: str = "nnUNetTrainerMAPSegUDA",
              contrast_randomization: bool = True, keep_epoch_checkpoints: bool = False, **settings) -> str:
        """``trainer`` continuing the source-only model ``teacher`` for ``adapt_epochs`` more epochs
        (:meth:`continue_training`); returns the model folder."""
        b = self.budget
        extra = {**(CONTRAST_RANDOMIZATION if contrast_randomization else {}), **settings}
        plans = self.variant(SOURCE, b.plans, self.bench_plans(name, seed), self.source_settings(
            seed, num_epochs=b.epochs + b.adapt_epochs, warmup_iterations=b.epochs * b.iterations,
            keep_epoch_checkpoints=keep_epoch_checkpoints, **extra))
        return self.continue_training(f"s{seed}_{name}", trainer, plans, teacher, b.epochs)

    def continue_training(self, name: str, trainer: str, plans: str, teacher: str, teacher_epochs: int) -> str:
        """``trainer`` on the source with ``plans``, continuing the model folder ``teacher`` (trained for
        ``teacher_epochs``): its final checkpoint is copied into the new model folder and stock ``nnUNetv2_train
        --c`` continues it, so a UDA warm-up that equals that source-only run is not trained again and the EMA
        teacher starts as that model. Skipped when the new model has trained past ``teacher_epochs``."""
        folder = self.model_folder(SOURCE, trainer, plans)
        self.discard_if_settings_changed(name, folder, SOURCE, plans)
        if self._start_from(folder, teacher, teacher_epochs):
            self.say(f"{name}: done earlier ({folder})")
            return folder
        self.say(f"{name}: nnUNetv2_train {SOURCE} 3d_fullres 0 -tr {trainer} -p {plans} --c (continues "
                 f"{os.path.basename(teacher)}; log: {os.path.join(self.logs, name + '.log')})")
        self.sh(name, ["nnUNetv2_train", str(SOURCE), "3d_fullres", "0", "-tr", trainer, "-p", plans, "-device", "cpu",
                       "--c"])
        return folder

    @staticmethod
    def _start_from(folder: str, teacher: str, teacher_epochs: int) -> bool:
        """True when the model in ``folder`` has trained past ``teacher_epochs``; else the final checkpoint of the
        model folder ``teacher`` is copied there for the run to continue."""
        import shutil
        import torch
        final = os.path.join(folder, "fold_0", "checkpoint_final.pth")
        if os.path.isfile(final) and torch.load(final, map_location="cpu", weights_only=False)["current_epoch"] > \
                teacher_epochs:
            return True
        os.makedirs(os.path.dirname(final), exist_ok=True)
        shutil.copyfile(os.path.join(teacher, "fold_0", "checkpoint_final.pth"), final)
        return False

    def seed_runs(self, seed: int, mae: str) -> Dict[str, str]:
        """Train one seed's models; returns {method: model folder} (test-time UDA and oracles: {'tta_cr/<target>':
        folder}, {'oracle/<target>': folder}). Floor (stock and DA5), oracle, the plain source-only model and
        test-time UDA on the reference seeds; the contrast-randomized source-only model, its iteration-matched
        continuation and UDA continuing it on every seed."""
        b = self.budget
        models = {}
        if b.is_reference(seed):
            stock = self.variant(SOURCE, STOCK_PLANS, f"{STOCK_PLANS}_bench_s{seed}", self.stock_settings(seed))
            models["floor"] = self.train(f"s{seed}_floor", SOURCE, "nnUNetTrainer_settingsFromPlans", stock)
            models["floor_da5"] = self.train(f"s{seed}_floor_da5", SOURCE, "nnUNetTrainerDA5_settingsFromPlans", stock)
            for target, oracle in zip(TARGETS, ORACLES):
                oplans = self.variant(oracle, STOCK_PLANS, f"{STOCK_PLANS}_bench_s{seed}", self.stock_settings(seed))
                models[f"oracle/{target}"] = self.train(f"s{seed}_oracle_{target}", oracle,
                                                        "nnUNetTrainer_settingsFromPlans", oplans)
            models["source_only"] = self.source_only(seed, mae, contrast_randomization=False)
        models["source_only_cr"] = self.source_only(seed, mae, contrast_randomization=True)
        # the iteration-matched control: the teacher continued for UDA's adapting iterations without target terms
        models["source_only_cr_matched"] = self.adapt("source_only_cr_matched", seed, models["source_only_cr"],
                                                      "nnUNetTrainerMAPSegUDA_noMPL")
        models["uda_cr"] = self.adapt("uda_cr", seed, models["source_only_cr"],
                                      keep_epoch_checkpoints=b.selection and seed == b.seeds[0])
        for target in TARGETS if b.is_reference(seed) else ():
            models[f"tta_cr/{target}"] = self.test_time(seed, target, models["source_only_cr"])
        return models

    def test_time(self, seed: int, target: int, stage1: str) -> str:
        """Stage 2 of test-time UDA at ``target`` from the source-only model ``stage1``."""
        b = self.budget
        tplans = self.bench_plans("tta", seed)
        if not os.path.isfile(os.path.join(self.model_folder(target, "nnUNetTrainerMAPSegTTA", tplans), "fold_0",
                                           "checkpoint_final.pth")):
            self.sh(f"s{seed}_receive_{target}", ["mapseg_receive_source_model", "-t", str(target), "-m", stage1,
                                                  "-f", "0", "--no_pbar"])
            self.variant(target, os.path.basename(stage1).split("__")[1], tplans, {
                "seed": seed, "num_epochs": b.tta_epochs, "num_iterations_per_epoch": b.iterations,
                "num_val_iterations_per_epoch": b.val, "initial_lr": b.lr})
        return self.train(f"s{seed}_tta_{target}", target, "nnUNetTrainerMAPSegTTA", tplans)

    def federated(self, seed: int, teacher: str) -> str:
        """Fed-MAPSeg (Flower simulation, one client per target) continuing the contrast-randomized source-only model
        ``teacher`` as centralized UDA does (the server holds the source and trains it first; the federation resumes
        from its checkpoint): ``fed_rounds`` rounds of ``fed_iterations`` server and client steps, contrast-randomized
        source views on the server."""
        b = self.budget
        settings = {"seed": seed, "num_epochs": b.epochs + b.fed_rounds, "num_iterations_per_epoch": b.fed_iterations,
                    "client_iterations": b.fed_iterations, "num_val_iterations_per_epoch": b.val,
                    "initial_lr": b.lr, "final_lr": b.lr / 100, "final_validation": False,
                    "ema_schedule": b.fed_ema_schedule, **CONTRAST_RANDOMIZATION}
        plans = self.bench_plans("fed", seed)
        self.variant(SOURCE, b.plans, plans, settings)
        for dataset in TARGETS:  # the clients' copies: the server sends their learning rate and steps each round
            self.variant(dataset, b.plans, plans, {"seed": seed, "ema_schedule": b.fed_ema_schedule})
        folder = self.model_folder(SOURCE, "nnUNetTrainerMAPSegFed", plans)
        self.discard_if_settings_changed("fed", folder, SOURCE, plans)
        if self._start_from(folder, teacher, b.epochs):
            self.say("fed: done earlier")
            return folder
        self.say(f"fed: mapseg_federated_simulation, {b.fed_rounds} rounds, clients {TARGETS} (continues "
                 f"{os.path.basename(teacher)})")
        self.sh(f"s{seed}_fed", ["mapseg_federated_simulation", "-s", str(SOURCE), "-t", *map(str, TARGETS), "-p",
                                 plans, "-tr", "nnUNetTrainerMAPSegFed", "-device", "cpu",
                                 "--workdir", os.path.join(self.work, "federation")])
        return folder

    def ablations(self, mae: str, seed_models: Dict[str, str], names: List[str], seed: int) -> Dict[str, str]:
        """The ``names`` of :data:`ABLATIONS` on ``seed`` (``seed_models``: that seed's models, ``mae`` its MAE)."""
        teachers = {"cr": lambda: seed_models["source_only_cr"],
                    "plain": lambda: seed_models.get("source_only") or self.source_only(seed, mae, False),
                    "cr_scratch": lambda: self.source_only(seed, None, True, tag="_scratch")}
        models = {}
        for name in names:
            spec = ABLATIONS[name]
            tag = "ablation_" + "_".join("".join(c if c.isalnum() else " " for c in name).split())
            models[name] = self.adapt(tag, seed, teachers[spec["teacher"]](),
                                      spec.get("trainer", "nnUNetTrainerMAPSegUDA"),
                                      spec.get("contrast_randomization", True), **spec.get("settings", {}))
        return models
