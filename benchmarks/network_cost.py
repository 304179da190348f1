"""Network size and cost of global-local collaboration, measured side by side in one run.

    python -m benchmarks.network_cost [--repeats 5]

Prints the parameter count of each preset and, on this machine's CPU with the CPU preset, the time of one
training step (forward + backward) of the GLC forward pass (local + global encoder passes, fused and auxiliary
decoder passes) relative to the patch-only forward pass. Absolute times are machine noise; the ratio is the
result."""
import argparse
import time

import torch

from mapseg_nnunet.architectures import MAPSegNet
from mapseg_nnunet.method.losses import channelwise_cosine_loss
from mapseg_nnunet.planning.presets import PRESETS


def parameter_counts(num_classes: int = 8):
    rows = []
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            net = MAPSegNet(1, num_classes, **preset.arch_kwargs())
        total = sum(p.numel() for p in net.parameters())
        encoder = sum(p.numel() for p in net.encoder.parameters())
        rows.append((name, preset.plans_name, list(preset.patch_size), total, encoder))
    return rows


def step_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| preset | plans | patch | parameters (8 classes) | encoder |")
    print("|---|---|---|---|---|")
    for name, plans, patch, total, encoder in parameter_counts():
        print(f"| {name} | {plans} | {patch} | {total:,} | {encoder:,} |")

    torch.manual_seed(0)
    preset = PRESETS["cpu"]
    net = MAPSegNet(1, 4, **preset.arch_kwargs())
    b = preset.batch_size
    x, g = torch.rand(b, 1, *preset.patch_size), torch.rand(b, 1, *preset.patch_size)
    boxes = torch.tensor([[[0, s // 2] for s in preset.patch_size]] * b)

    def patch_only():
        net.zero_grad()
        net(x).mean().backward()

    def glc():
        net.zero_grad()
        out = net(x, g, boxes)
        (out["logits"].mean() + out["aux_logits"].mean()
         + channelwise_cosine_loss(out["local_features"], out["global_crop"])).backward()

    t_patch, t_glc = step_time(patch_only, args.repeats), step_time(glc, args.repeats)
    print(f"\nCPU preset, batch {b}, median of {args.repeats} steps (forward + backward):")
    print(f"  patch-only {t_patch * 1000:.0f} ms, GLC {t_glc * 1000:.0f} ms, ratio GLC / patch-only "
          f"{t_glc / t_patch:.2f}")


if __name__ == "__main__":
    main()
