"""Speed and memory ratios, each measured side by side in one process (absolute times on a shared 2-core machine
are noise; ratios of things timed together are the result). Uses the benchmark's preprocessed demo cohort and
trained models."""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from typing import Dict, List

import numpy as np
import torch

from network_cost import step_time as median_time  # median of timed calls after a warm-up


def _loaders(runner):
    from mapseg_nnunet.data.global_local import GlobalLocalAugmentation, GlobalLocalDataLoader, SourceTargetLoader
    from mapseg_nnunet.data.target_registry import training_domains
    from run_benchmarks import PLANS, SOURCE
    plans = json.load(open(os.path.join(runner.folder(SOURCE, "nnUNet_preprocessed"), PLANS + ".json")))
    config = plans["configurations"]["3d_fullres"]
    name = os.path.basename(runner.folder(SOURCE))
    domains = training_domains(name, PLANS, "3d_fullres", config["data_identifier"], ("target",))
    patch, intensity = config["patch_size"], config["mapseg"]["intensity"]
    source = GlobalLocalDataLoader(domains[:1], config["batch_size"], patch, intensity,
                                   GlobalLocalAugmentation(scale_range=(0.7, 1.4), rotation_degrees=30,
                                                           flip_probability=0), True)
    target = GlobalLocalDataLoader(domains[1:], config["batch_size"], patch, intensity,
                                   GlobalLocalAugmentation(scale_range=(0.7, 1.3), rotation_degrees=30,
                                                           flip_probability=0), False)
    return SourceTargetLoader(source, target), config


def uda_step_ratios(runner, repeats: int) -> List[dict]:
    """UDA iteration vs the sum of its network passes timed alone; data-loader share of an iteration."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from mapseg_nnunet.architectures import MAPSegNet
    from mapseg_nnunet.method.losses import MAPSegLossWeights, source_loss, target_loss
    from mapseg_nnunet.method.masking import MaskingSettings
    from mapseg_nnunet.method.teacher import ema_update, make_teacher
    loader, config = _loaders(runner)
    torch.manual_seed(0)
    net = MAPSegNet(1, 4, **config["architecture"]["arch_kwargs"])
    teacher = make_teacher(net)
    loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    optimizer = torch.optim.AdamW(net.parameters(), 1e-4)
    weights, masking = MAPSegLossWeights(), MaskingSettings()

    def device(batch):
        out = {k: v for k, v in batch.items() if torch.is_tensor(v)}
        for key in ("target", "global_target"):
            if key in out:
                out[key] = out[key].clamp_min(0).long()
        return out

    batch = loader.generate_train_batch()
    src, tgt = device(batch["source"]), device(batch["target"])

    def full_step():
        optimizer.zero_grad(set_to_none=True)
        s, _ = source_loss(net, loss, src, weights, masking)
        t, _ = target_loss(net, teacher, loss, tgt, weights, masking)
        (s + t).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        optimizer.step()
        ema_update(teacher, net, 0.999)

    def glc_pass(b, masked: bool):
        x, g = (masking.masked(b["data"], b["global"]) if masked else (b["data"], b["global"]))
        def run():
            net.zero_grad(set_to_none=True)
            out = net.forward_glc(x, g, b["box"])
            (out["logits"].mean() + out["aux_logits"].mean()).backward()
        return run

    def teacher_pass():
        with torch.no_grad():
            teacher.forward_glc(tgt["data"], tgt["global"], tgt["box"])

    step = median_time(full_step, repeats)
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


def glc_inference_ratio(runner, repeats: int) -> dict:
    """GLC sliding window vs nnU-Net's own sliding window, same network, same tiles, same case."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from mapseg_nnunet.inference.predictor_hook import GLC_ATTRIBUTE
    from mapseg_nnunet.architectures.unwrap import unwrap_network
    from run_benchmarks import SOURCE
    model = runner.model_folder(SOURCE, "nnUNetTrainerMAPSegUDA", f"MAPSegPlansCPU_bench_s{runner.budget.seeds[0]}")
    predictor = nnUNetPredictor(tile_step_size=0.833, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model, (0,))
    images = os.path.join(runner.folder(952), "imagesTs")
    first = sorted(os.listdir(images))[0]
    data, _, _ = predictor.configuration_manager.preprocessor_class(verbose=False).run_case(
        [os.path.join(images, first)], None, predictor.plans_manager, predictor.configuration_manager,
        predictor.dataset_json)
    image = torch.from_numpy(data)
    network = unwrap_network(predictor.network)
    setattr(network, GLC_ATTRIBUTE, True)
    glc = median_time(lambda: predictor.predict_sliding_window_return_logits(image), repeats)
    setattr(network, GLC_ATTRIBUTE, False)
    stock = median_time(lambda: predictor.predict_sliding_window_return_logits(image), repeats)
    setattr(network, GLC_ATTRIBUTE, True)
    return {"name": "GLC inference / nnU-Net's sliding window (same network and tiles)", "ratio": glc / stock,
            "detail": f"one {list(image.shape[1:])} case: GLC {glc:.2f} s, stock {stock:.2f} s"}


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


def registration_memory(runner) -> dict:
    """Peak RSS growth while registering a 10-case target cohort, relative to one preprocessed case."""
    from run_benchmarks import PLANS, SOURCE
    out = subprocess.run([sys.executable, "-c", REGISTER_PROBE, str(SOURCE), "953", PLANS], env=runner.env,
                         capture_output=True, text=True, check=True)
    before, after = (int(v) * 1024 for v in re.search(r"RSS (\d+) (\d+)", out.stdout).groups())
    folder = runner.folder(953, "nnUNet_preprocessed")
    plans = json.load(open(os.path.join(folder, PLANS + ".json")))
    raw = os.path.join(runner.folder(953), "imagesTr")
    import SimpleITK as sitk
    case_bytes = np.prod(sitk.ReadImage(os.path.join(raw, sorted(os.listdir(raw))[0])).GetSize()) * 4
    return {"name": "peak RSS growth registering a target cohort / one case (float32)",
            "ratio": (after - before) / case_bytes,
            "detail": f"{len(os.listdir(raw))} cases; RSS {before / 2**20:.0f} MiB after imports -> peak "
                      f"during registration (VmHWM reset after the imports) "
                      f"{after / 2**20:.0f} MiB; one case {case_bytes / 2**20:.1f} MiB"}


def iteration_times_from_logs(runner) -> List[dict]:
    """Seconds per training iteration of the benchmark's own runs (median epoch time / iterations), from the
    nnU-Net logs of the first seed: MAE and UDA vs stock nnUNetTrainer at the same patch size."""
    from run_benchmarks import SOURCE, PLANS, STOCK_PLANS
    seed, its = runner.budget.seeds[0], runner.budget.iterations

    def per_iteration(trainer, plans, fold="0", skip_first=True):
        folder = os.path.join(runner.model_folder(SOURCE, trainer, plans), f"fold_{fold}")
        times = []
        for log in sorted(f for f in os.listdir(folder) if f.startswith("training_log")):
            times += [float(t) for t in re.findall(r"[Ee]poch time:? ([\d.]+) s", open(os.path.join(folder, log)).read())]
        times = times[1:] if skip_first and len(times) > 1 else times  # the first epoch includes start-up
        return statistics.median(times) / its
    stock = per_iteration("nnUNetTrainer_settingsFromPlans", f"{STOCK_PLANS}_bench_s{seed}")
    rows = []
    for name, trainer, plans, fold in (
            ("MAE iteration (batch 4) / stock nnUNetTrainer iteration (batch 2)", "nnUNetTrainerMAPSegMAE",
             f"{PLANS}_bench_mae", "all"),
            ("source-only MAPSeg iteration / stock nnUNetTrainer iteration", "nnUNetTrainerMAPSegUDA_noMPL",
             f"{PLANS}_bench_s{seed}", "0"),
            ("UDA iteration (whole run incl. warm-up) / stock nnUNetTrainer iteration", "nnUNetTrainerMAPSegUDA",
             f"{PLANS}_bench_s{seed}", "0")):
        t = per_iteration(trainer, plans, fold)
        rows.append({"name": name, "ratio": t / stock,
                     "detail": f"{t:.2f} s vs {stock:.2f} s per iteration (median epoch time incl. its validation "
                               f"steps / {its})"})
    return rows


def measure_all(runner, repeats: int) -> Dict[str, list]:
    rows = uda_step_ratios(runner, repeats)
    rows.append(glc_inference_ratio(runner, max(1, repeats // 2)))
    rows.append(registration_memory(runner))
    rows += iteration_times_from_logs(runner)
    return {"rows": rows}
