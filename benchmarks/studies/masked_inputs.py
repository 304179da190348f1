"""Does masking the input (70 % of the voxels zeroed in cubes, the masked pseudo-labeling student's input) upset a
trained network's normalisation layers? Measured on a trained model folder of the benchmark's cohort.

    python -m benchmarks.studies.masked_inputs --model FOLDER [--batches 8]

For source validation batches (with labels) and target training batches (without), the network runs on the
clean views (the teacher's input) and on the masked views (the student's input, the trainer's own
``masking``), with the global view as in training. Reported:

* agreement of the masked and the clean prediction (argmax) on the **visible** voxels: a network whose
  statistics are thrown by the zeroed cubes disagrees there, where it sees the same image;
* source Dice on visible voxels, clean vs masked input;
* for every normalisation layer (InstanceNorm of nnU-Net's U-Nets, the norms of the paper's network) the ratio
  of its input's per-channel standard deviation, masked / clean: median and extremes over the layers;
* which of the two effects of masking costs the Dice: the masked input once more, but every InstanceNorm layer
  normalising with the mean and variance it computed on the clean input (``CleanStatistics``). If that recovers
  the clean Dice on visible voxels, the shifted statistics are the cost (and statistics over visible voxels, a
  masked InstanceNorm, would remove it); if it stays at the masked Dice, the cost is the lost context, which no
  normalisation change recovers. Networks without InstanceNorm (the paper's) report n/a.

Writes ``masked_inputs_<plans>.md`` / ``.json`` to ``--out`` (default: benchmarks/results/masked_inputs/).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from torch import nn

from ..cohort import SOURCE
from ..runner import FULL, Runner
from ..study import add_work_and_out, command_line

NORMS = (nn.InstanceNorm3d, nn.GroupNorm, nn.BatchNorm3d, nn.LayerNorm)


class NormInputStd:
    """Forward hooks recording, per normalisation layer, the mean over samples and channels of the per-channel
    standard deviation of the layer's input."""

    def __init__(self, network: nn.Module):
        self.values, self.handles = {}, []
        for name, module in network.named_modules():
            if isinstance(module, NORMS):
                self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def record(module, inputs, output):
            x = inputs[0]
            self.values.setdefault(name, []).append(float(x.flatten(2).std(dim=2).mean()))
        return record

    def pop(self) -> dict:
        values, self.values = self.values, {}
        return values


class CleanStatistics:
    """Forward hooks on every ``InstanceNorm3d``: ``record`` stores each layer's per-sample, per-channel input mean
    and variance; ``apply`` replaces each layer's output by its input normalised with the stored statistics (the
    layer's affine and eps kept)."""

    def __init__(self, network: nn.Module):
        self.layers = [m for m in network.modules() if isinstance(m, nn.InstanceNorm3d)]
        self.stats, self.mode, self.handles = {}, None, [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module, inputs, output):
        x = inputs[0]
        if self.mode == "record":
            flat = x.flatten(2)
            self.stats[module] = (flat.mean(2), flat.var(2, unbiased=False))
        elif self.mode == "apply":
            mean, var = self.stats[module]
            y = (x - mean[..., None, None, None]) / torch.sqrt(var[..., None, None, None] + module.eps)
            if module.affine:
                y = y * module.weight[None, :, None, None, None] + module.bias[None, :, None, None, None]
            return y
        return None

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def dice(prediction: torch.Tensor, label: torch.Tensor, where: torch.Tensor, classes) -> float:
    scores = []
    for c in classes:
        p, r = (prediction == c) & where, (label == c) & where
        denominator = int(p.sum() + r.sum())
        if denominator:
            scores.append(2 * int((p & r).sum()) / denominator)
    return 100 * float(np.mean(scores))


@torch.no_grad()
def measure(trainer, batches: int) -> dict:
    from mapseg_nnunet.architectures.unwrap import unwrap_network
    network = unwrap_network(trainer.network).eval()
    train, val = trainer.get_dataloaders()
    train, val = train.data_loader, val.data_loader
    hooks = NormInputStd(network)
    swap = CleanStatistics(network)
    generator = torch.Generator().manual_seed(0)
    rows = {"source": {"agreement": [], "dice_clean": [], "dice_masked": [], "dice_masked_clean_statistics": [],
                       "agreement_masked_clean_statistics": []},
            "target": {"agreement": [], "agreement_masked_clean_statistics": []}}
    std_ratio = {}
    classes = range(1, trainer.label_manager.num_segmentation_heads)
    for i in range(batches):
        for domain, batch in (("source", val.generate_train_batch()),
                              ("target", train.generate_train_batch()["target"])):
            if batch is None:
                continue
            b = trainer.batch_to_device(batch)
            clean = network(b["data"], b["global"], b["box"], with_aux=False)["logits"].argmax(1)
            clean_std = hooks.pop()
            (x, mask), (g, _) = trainer.masking.mask(b["data"], b["global"], generator)
            masked = network(x, g, b["box"], with_aux=False)["logits"].argmax(1)
            masked_std = hooks.pop()
            visible = mask[:, 0] == 0
            rows[domain]["agreement"].append(100 * float((clean == masked)[visible].float().mean()))
            swapped = masked_with_clean_statistics(network, swap, b, x, g) if swap.layers else None
            hooks.pop()
            if swapped is not None:
                rows[domain]["agreement_masked_clean_statistics"].append(
                    100 * float((clean == swapped)[visible].float().mean()))
            if domain == "source":
                label = b["target"][:, 0]
                rows[domain]["dice_clean"].append(dice(clean, label, visible, classes))
                rows[domain]["dice_masked"].append(dice(masked, label, visible, classes))
                if swapped is not None:
                    rows[domain]["dice_masked_clean_statistics"].append(dice(swapped, label, visible, classes))
            for name in clean_std:
                std_ratio.setdefault(name, []).extend(
                    m / max(c, 1e-8) for c, m in zip(clean_std[name], masked_std[name]))
    swap.remove()
    ratios = {name: float(np.mean(v)) for name, v in std_ratio.items()}
    order = list(ratios)
    return {"source": {k: float(np.mean(v)) for k, v in rows["source"].items() if v},
            "target": {k: float(np.mean(v)) for k, v in rows["target"].items() if v},
            "norm_layers": len(ratios),
            "std_ratio": {"first": ratios[order[0]] if order else None,
                          "median": float(np.median(list(ratios.values()))) if order else None,
                          "min": min(ratios.values()) if order else None,
                          "max": max(ratios.values()) if order else None},
            "std_ratio_per_layer": ratios, "masking": vars(trainer.masking)}


def masked_with_clean_statistics(network, swap: CleanStatistics, b: dict, x: torch.Tensor, g: torch.Tensor):
    """The masked views' prediction with every InstanceNorm normalising by the clean views' statistics. The encoder
    runs twice (local patch, global view), so each pass is recorded on its clean view and replayed on the masked
    one; the decoder's layers take the clean local pass's statistics."""
    swap.mode, swap.stats = "record", {}
    local_features = network.encode(b["data"])
    local_stats = dict(swap.stats)
    global_map = network.fusion_map(network.encode(b["global"]))
    global_stats = dict(swap.stats)
    network.fuse_and_decode(local_features, global_map, b["box"])
    decoder_stats = {m: v for m, v in swap.stats.items() if m not in global_stats}
    swap.mode, swap.stats = "apply", global_stats
    masked_global = network.fusion_map(network.encode(g))
    swap.stats = {**local_stats, **decoder_stats}
    logits = network.fuse_and_decode(network.encode(x), masked_global, b["box"])[0]
    swap.mode, swap.stats = None, {}
    return logits.argmax(1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained model folder (TRAINER__PLANS__3d_fullres)")
    parser.add_argument("--batches", type=int, default=8)
    add_work_and_out(parser, "masked_inputs")
    args = parser.parse_args(argv)
    from mapseg_nnunet.training.trainer_lookup import build_trainer
    Runner(os.path.abspath(args.work), FULL, quick=False)  # nnU-Net folders of the benchmark's work folder
    trainer_name, plans, configuration = os.path.basename(os.path.normpath(args.model)).split("__")
    os.environ["nnUNet_n_proc_DA"] = "0"
    trainer = build_trainer(str(SOURCE), "nnUNetTrainerMAPSegUDA", plans, configuration, 0, torch.device("cpu"))
    trainer.initialize()
    trainer.load_checkpoint(os.path.join(args.model, "fold_0", "checkpoint_final.pth"))
    result = {"command": command_line("masked_inputs", argv),
              "model": args.model, "trainer": trainer_name, "plans": plans, **measure(trainer, args.batches)}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"masked_inputs_{plans}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    s, t, r = result["source"], result["target"], result["std_ratio"]
    lines = [f"# Masked vs clean input on `{trainer_name}` / `{plans}`", "",
             f"Command: `{result['command'].strip()}`; masking {result['masking']}.", "",
             "| measure | value |", "|---|---|",
             f"| agreement masked vs clean prediction on visible voxels, source validation (%) | "
             f"{s['agreement']:.1f} |",
             f"| same, target training batches (%) | {t.get('agreement', float('nan')):.1f} |",
             f"| source Dice on visible voxels, clean input (%) | {s['dice_clean']:.1f} |",
             f"| source Dice on visible voxels, masked input (%) | {s['dice_masked']:.1f} |",
             f"| same, masked input with the clean input's InstanceNorm statistics (%) | "
             f"{s.get('dice_masked_clean_statistics', float('nan')):.1f} |",
             f"| agreement of that with the clean prediction on visible voxels, source / target (%) | "
             f"{s.get('agreement_masked_clean_statistics', float('nan')):.1f} / "
             f"{t.get('agreement_masked_clean_statistics', float('nan')):.1f} |",
             f"| normalisation layers | {result['norm_layers']} |",
             f"| their input std, masked / clean: first layer, median, min, max | {r['first']:.2f}, "
             f"{r['median']:.2f}, {r['min']:.2f}, {r['max']:.2f} |"]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
