"""GPU check of the paper preset (96^3 patches, width 512): one short call where a GPU is available.

    python -m benchmarks.studies.gpu_paper_preset [--steps 5] [--peak_tflops 989] [--json OUT.json]
    python -m benchmarks.studies.gpu_paper_preset --device cpu --preset cpu --steps 2   # dry run of the same code

Measures, for one centralized UDA training step (Eq. 8: source masked + unmasked GLC passes, target masked pass,
teacher pass, backward, AdamW, EMA) on random data of the preset's shape:

* peak GPU memory at batch 1, fp32 and AMP (fp16 autocast + GradScaler, as the trainers), with and without
  activation checkpointing;
* step time AMP / fp32 (ratio, side by side);
* MFU: model FLOPs of the step (PyTorch's FLOP counter) / step time / the GPU's peak dense TFLOPS.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def build(preset_name: str, device: torch.device, checkpointing: bool):
    from mapseg_nnunet.architectures import MAPSegNet
    from mapseg_nnunet.planning.presets import PRESETS
    from mapseg_nnunet.method.teacher import make_teacher
    preset = PRESETS[preset_name]
    net = MAPSegNet(1, 8, **preset.arch_kwargs()).to(device)
    net.encoder.activation_checkpointing = checkpointing
    return preset, net, make_teacher(net)


def random_batch(preset, batch_size: int, device: torch.device, labeled: bool) -> dict:
    shape = (batch_size, 1, *preset.patch_size)
    size = torch.tensor(preset.patch_size, dtype=torch.float32)
    lo = (size / 4).floor()
    box = torch.stack([lo, lo + size / 2], -1).unsqueeze(0).repeat(batch_size, 1, 1)
    batch = {"data": torch.rand(shape, device=device), "global": torch.rand(shape, device=device),
             "box": box.to(device)}
    if labeled:
        batch["target"] = torch.randint(0, 8, shape, device=device)
        batch["global_target"] = torch.randint(0, 8, shape, device=device)
    return batch


def make_step(net, teacher, preset, device: torch.device, amp: bool, batch_size: int):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from mapseg_nnunet.method.losses import MAPSegLossWeights, source_loss, target_loss
    from mapseg_nnunet.method.masking import MaskingSettings
    from mapseg_nnunet.method.teacher import ema_update
    loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    optimizer = torch.optim.AdamW(net.parameters(), 1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    weights, masking = MAPSegLossWeights(), MaskingSettings()
    source, target = random_batch(preset, batch_size, device, True), random_batch(preset, batch_size, device, False)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            s, _ = source_loss(net, loss, source, weights, masking)
            t, _ = target_loss(net, teacher, loss, target, weights, masking)
            total = s + t
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        ema_update(teacher, net, 0.999)
    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, device, steps: int) -> float:
    step()
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(preset_name: str, device: torch.device, amp: bool, checkpointing: bool, steps: int) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    preset, net, teacher = build(preset_name, device, checkpointing)
    step = make_step(net, teacher, preset, device, amp, batch_size=1)
    seconds = timed(step, device, steps)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step()
    del net, teacher, step
    return {"amp": amp, "activation_checkpointing": checkpointing, "step_s": seconds, "peak_gib": peak,
            "tflop_per_step": counter.get_total_flops() / 1e12}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="paper", choices=["paper", "cpu"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak_tflops", type=float, default=989.0,
                        help="the GPU's peak dense fp16/bf16 TFLOPS for MFU (H100/H200 SXM: 989)")
    parser.add_argument("--json", default=None, help="also write the measurements here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("ERROR: no CUDA device; use --device cpu --preset cpu for a dry run")
    torch.backends.cudnn.benchmark = True
    rows = [measure(args.preset, device, amp, ckpt, args.steps) for amp, ckpt in
            ((False, False), (True, False), (True, True))]
    fp32, amp = rows[0], rows[1]
    summary = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "preset": args.preset,
               "rows": rows, "amp_over_fp32_step_time": amp["step_s"] / fp32["step_s"],
               "mfu_amp": amp["tflop_per_step"] / amp["step_s"] / args.peak_tflops}
    for row in rows:
        print(f"amp={row['amp']!s:5} checkpointing={row['activation_checkpointing']!s:5} step {row['step_s']:.3f} s "
              f"peak {row['peak_gib']:.1f} GiB  {row['tflop_per_step']:.2f} TFLOP/step")
    print(f"AMP / fp32 step time: {summary['amp_over_fp32_step_time']:.2f}; MFU (AMP, peak "
          f"{args.peak_tflops:.0f} TFLOPS): {100 * summary['mfu_amp']:.1f} %")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
