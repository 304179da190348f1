"""Speed and memory ratios, each measured side by side in one process (absolute times on a shared 2-core machine
are noise; ratios of things timed together are the result). Uses the benchmark's preprocessed demo cohort and
trained models; the UDA iteration is the trainer's own (``nnUNetTrainerMAPSegUDA.train_step`` on a batch of its own
training loader)."""
from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np
import torch

from .cohort import PLANS, SOURCE, STOCK_PLANS, TARGETS


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def uda_trainer(plans: str = PLANS):
    """The benchmark's UDA trainer as ``nnUNetv2_train`` builds it (source dataset, ``plans``, fold 0, CPU),
    initialised, and its training loader (a ``SourceTargetLoader``), run in this process. Needs the nnU-Net
    folders of a :class:`~benchmarks.runner.Runner`; the trainer's log lands in the otherwise unused
    ``nnUNetTrainerMAPSegUDA__{plans}__3d_fullres`` results folder."""
    from mapseg_nnunet.training.trainer_lookup import build_trainer
    os.environ["nnUNet_n_proc_DA"] = "0"  # SingleThreadedAugmenter: loading is timed in this process
    trainer = build_trainer(str(SOURCE), "nnUNetTrainerMAPSegUDA", plans, "3d_fullres", 0, torch.device("cpu"))
    trainer.initialize()
    train, _ = trainer.get_dataloaders()
    return trainer, train.data_loader


def uda_step_ratios(runner, repeats: int, plans: str = PLANS) -> List[dict]:
    """The UDA trainer's iteration (``train_step`` with the target terms) on ``plans`` vs the sum of its network
    passes timed alone; data-loader share of an iteration (the trainer's loader)."""
    from mapseg_nnunet.architectures.unwrap import unwrap_network
    with open(os.path.join(runner.logs, f"speed_uda_trainer_{plans}.log"), "w") as log, \
            contextlib.redirect_stdout(log):
        trainer, loader = uda_trainer(plans)
        trainer.warmup_iterations = 0  # every step adapts; the warm-up call of median_time creates the teacher
        batch = loader.generate_train_batch()
        step = median_time(lambda: trainer.train_step(batch), repeats)
    network, teacher, masking = unwrap_network(trainer.network), trainer.teacher, trainer.masking
    src, tgt = trainer.batch_to_device(batch["source"]), trainer.batch_to_device(batch["target"])

    def glc_pass(b, masked: bool):
        x, g = (masking.masked(b["data"], b["global"]) if masked else (b["data"], b["global"]))
        def run():
            network.zero_grad(set_to_none=True)
            out = network(x, g, b["box"])
            (out["logits"].mean() + out["aux_logits"].mean()).backward()
        return run

    def teacher_pass():
        with torch.no_grad():
            teacher(tgt["data"], tgt["global"], tgt["box"])

    passes = {"source unmasked": glc_pass(src, False), "source masked": glc_pass(src, True),
              "target masked": glc_pass(tgt, True), "teacher (no grad)": teacher_pass}
    alone = {name: median_time(fn, repeats) for name, fn in passes.items()}
    load = median_time(loader.generate_train_batch, repeats)
    return [
        {"name": "UDA iteration / sum of its network passes timed alone", "ratio": step / sum(alone.values()),
         "detail": f"iteration {step * 1e3:.0f} ms; passes " + ", ".join(f"{k} {v * 1e3:.0f} ms"
                                                                        for k, v in alone.items())},
        {"name": "data-loader share of a UDA iteration (in-process loading)", "ratio": load / (load + step),
         "detail": f"source + target batch {load * 1e3:.0f} ms vs step {step * 1e3:.0f} ms"}]


def _predictor_and_case(model: str, runner):
    """An ``nnUNetPredictor`` of ``model`` (a trained model folder with fold 0) at the benchmarks' inference
    settings, and the first T2w test case preprocessed by it."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=0.833, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model, (0,))
    images = os.path.join(runner.folder(TARGETS[0]), "imagesTs")
    first = sorted(os.listdir(images))[0]
    data, _, _ = predictor.configuration_manager.preprocessor_class(verbose=False).run_case(
        [os.path.join(images, first)], None, predictor.plans_manager, predictor.configuration_manager,
        predictor.dataset_json)
    return predictor, torch.from_numpy(data)


def glc_inference_ratios(runner, repeats: int, model: str) -> List[dict]:
    """GLC sliding window vs nnU-Net's own sliding window, same network, same tiles, same case; and the GLC windows
    in batches (``WINDOWS_PER_BATCH``, what ``nnUNetv2_predict`` uses) vs one at a time."""
    from mapseg_nnunet.architectures.unwrap import unwrap_network
    from mapseg_nnunet.inference import glc as glc_inference
    from mapseg_nnunet.inference.predictor_hook import GLC_ATTRIBUTE
    predictor, image = _predictor_and_case(model, runner)
    network = unwrap_network(predictor.network)
    batched = glc_inference.WINDOWS_PER_BATCH

    def predict(glc: bool, windows_per_batch: int = batched):
        def run():
            setattr(network, GLC_ATTRIBUTE, glc)
            glc_inference.WINDOWS_PER_BATCH = windows_per_batch
            try:
                predictor.predict_sliding_window_return_logits(image)
            finally:
                glc_inference.WINDOWS_PER_BATCH = batched
        return run
    ratio, glc, stock = interleaved_ratio(predict(True), predict(False), repeats)
    batch_ratio, in_batches, single = interleaved_ratio(predict(True), predict(True, 1), repeats)
    setattr(network, GLC_ATTRIBUTE, True)
    case = list(image.shape[1:])
    return [{"name": "GLC inference / nnU-Net's sliding window (same network and tiles)", "ratio": ratio,
             "detail": f"one {case} case: GLC {glc:.2f} s ({batched} windows per batch), stock {stock:.2f} s (one "
                       f"window at a time; medians; ratio: median of {repeats} interleaved pairs)"},
            {"name": f"GLC inference, {batched} windows per batch / one window at a time", "ratio": batch_ratio,
             "detail": f"one {case} case: {in_batches:.2f} s vs {single:.2f} s (medians; ratio: median of {repeats} "
                       f"interleaved pairs)"}]


def interleaved_ratio(a, b, repeats: int):
    """Median of the time ratios a / b over ``repeats`` back-to-back pairs (after one warm-up call of each), and the
    median times of a and b: pairs see the same machine state, so drift on a shared machine cancels."""
    a(), b()
    ratios, times_a, times_b = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        a()
        middle = time.perf_counter()
        b()
        end = time.perf_counter()
        times_a.append(middle - start)
        times_b.append(end - middle)
        ratios.append(times_a[-1] / times_b[-1])
    return statistics.median(ratios), statistics.median(times_a), statistics.median(times_b)


REGISTER_PROBE = r"""
import sys
from mapseg_nnunet.data.target_registry import register_target
import nnunetv2.preprocessing.preprocessors.default_preprocessor

def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))

open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS, after the imports
before = status("VmRSS")
register_target(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
print("RSS", before, status("VmHWM"))
"""


def registration_memory(runner, plans: str = PLANS) -> dict:
    """Peak RSS growth while registering a 10-case target cohort (the cross-site target), relative to one
    preprocessed case."""
    target = TARGETS[1]
    out = subprocess.run([sys.executable, "-c", REGISTER_PROBE, str(SOURCE), str(target), plans], env=runner.env,
                         capture_output=True, text=True, check=True)
    before, after = (int(v) * 1024 for v in re.search(r"RSS (\d+) (\d+)", out.stdout).groups())
    raw = os.path.join(runner.folder(target), "imagesTr")
    import SimpleITK as sitk
    case_bytes = np.prod(sitk.ReadImage(os.path.join(raw, sorted(os.listdir(raw))[0])).GetSize()) * 4
    return {"name": "peak RSS growth registering a target cohort / one case (float32)",
            "ratio": (after - before) / case_bytes,
            "detail": f"{len(os.listdir(raw))} cases; RSS {before / 2**20:.0f} MiB after imports -> peak "
                      f"during registration (VmHWM reset after the imports) "
                      f"{after / 2**20:.0f} MiB; one case {case_bytes / 2**20:.1f} MiB"}


def epoch_times(fold_folder: str) -> List[float]:
    """Every epoch's wall time (s) in the nnU-Net training logs of a fold folder, in order (resumed runs included)."""
    times = []
    for log in sorted(f for f in os.listdir(fold_folder) if f.startswith("training_log")):
        text = open(os.path.join(fold_folder, log)).read()
        times += [float(t) for t in re.findall(r"[Ee]poch time:? ([\d.]+) s", text)]
    return times


def iteration_times_from_logs(runner) -> List[dict]:
    """Seconds per training iteration of the benchmark's own runs (median epoch time / iterations), from the
    nnU-Net logs of the first seed: MAE, source-only and adapting UDA vs stock nnUNetTrainer at the same patch."""
    seed, its, plans = runner.budget.seeds[0], runner.budget.iterations, runner.budget.plans

    def per_iteration(trainer, plans, fold="0", skip_first=True):
        times = epoch_times(os.path.join(runner.model_folder(SOURCE, trainer, plans), f"fold_{fold}"))
        times = times[1:] if skip_first and len(times) > 1 else times  # the first epoch includes start-up
        return statistics.median(times) / its
    stock = per_iteration("nnUNetTrainer_settingsFromPlans", f"{STOCK_PLANS}_bench_s{seed}")
    rows = []
    for name, trainer, variant, fold, skip_first in (
            ("MAE iteration (batch 4) / stock nnUNetTrainer iteration (batch 2)", "nnUNetTrainerMAPSegMAE",
             f"{plans}_bench_mae_s{seed}", "all", True),
            ("source-only MAPSeg iteration (contrast-randomized) / stock nnUNetTrainer iteration",
             "nnUNetTrainerMAPSegUDA_noMPL", runner.bench_plans("source_only_cr", seed), "0", True),
            ("UDA iteration (adapting epochs) / stock nnUNetTrainer iteration", "nnUNetTrainerMAPSegUDA",
             runner.bench_plans("uda_cr", seed), "0", False)):
        t = per_iteration(trainer, variant, fold, skip_first)
        rows.append({"name": name, "ratio": t / stock,
                     "detail": f"{t:.2f} s vs {stock:.2f} s per iteration (median epoch time incl. its validation "
                               f"steps / {its})"})
    return rows


def measure_all(runner, repeats: int) -> Dict[str, list]:
    plans = runner.budget.plans
    rows = uda_step_ratios(runner, repeats, plans)
    rows += glc_inference_ratios(runner, max(1, repeats // 2), runner.model_folder(
        SOURCE, "nnUNetTrainerMAPSegUDA", runner.bench_plans("uda_cr", runner.budget.seeds[0])))
    rows.append(registration_memory(runner, plans))
    rows += iteration_times_from_logs(runner)
    return {"rows": rows}
