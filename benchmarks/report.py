"""RESULTS.md and PNG plots from the measured results of ``python -m benchmarks.run`` (results.json is kept next
to them, so the report can be rewritten without re-running: ``python -m benchmarks.report [OUT_FOLDER]``, by default
``benchmarks/results/``)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import Dict, List, Optional

import numpy as np

from mapseg_nnunet.data.atomic import atomic_path
from mapseg_nnunet.method.selection import replaces_best

from .cohort import CLASS_NAMES, SHIFTS, UNET_PLANS
from .paired import paired_lines, paired_table
from .study import RESULTS

MIN_GAP = 5.0  # Dice points: below, "fraction of the gap" is noise over a tiny denominator
# (key in the results, summary key with {b} = the backbone, title); the floor and the oracle keep their names
METHODS = [("floor", "floor", "source-only stock nnU-Net (nnUNetTrainer, nnUNetPlansCPU): floor"),
           ("floor_da5", "floor_da5", "source-only stock nnU-Net with its stronger augmentation (nnUNetTrainerDA5, "
                                      "nnUNetPlansCPU)"),
           ("source_only", "source_only_{b}", "source-only MAPSeg, no contrast randomization"),
           ("source_only_cr", "source_only_{b}_cr", "source-only MAPSeg, contrast-randomized (the UDA teacher)"),
           ("source_only_cr_matched", "source_only_{b}_cr_matched",
            "source-only MAPSeg, contrast-randomized, continued for UDA's adapting iterations (iteration-matched)"),
           ("uda_cr", "uda_{b}_cr", "MAPSeg centralized UDA (contrast-randomized, hard pseudo-labels)"),
           ("tta_cr", "tta_{b}_cr", "MAPSeg test-time UDA (from the contrast-randomized source-only model)"),
           ("fed_cr", "fed_{b}_cr", "Fed-MAPSeg (Flower simulation, continuing the contrast-randomized source-only "
                                     "model; first seed only)"),
           ("oracle", "oracle", "target oracle (nnUNetTrainer on target labels): ceiling")]
BACKBONES = {"MAPSegResEncPlansCPU": "unet", "MAPSegPlansCPU": "paper"}
# the written goal (issue "Benchmarks v2"): gap closed by the best centralized UDA per shift, and the distance of
# test-time UDA / Fed-MAPSeg to it (the paper's: TTA -1.8 / -2.8 / -2.3, Fed -7.8 / +0.5 / -4.2 Dice)
GOAL_GAP_CLOSED = {"cross-sequence (T2w)": 0.75, "cross-site": 0.50, "cross-age": 0.50}
GOAL_TTA_DISTANCE, GOAL_FED_DISTANCE = 5.0, 8.0


def summary_key(method: str, plans: str) -> str:
    template = next(key for m, key, _ in METHODS if m == method)
    return template.format(b=BACKBONES.get(plans, plans))


def _stats(values: List[float]) -> str:
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def _values(results: dict, method: str, target: str, key: str = "mean") -> List[float]:
    out = []
    for row in results["quality"].values():
        if method in row and target in row[method]:
            scores = row[method][target]
            out.append(scores["mean"] if key == "mean" else scores["classes"][key])
    return out


def summary(results: dict, targets: Dict[str, str], plans: str = UNET_PLANS) -> Dict[str, Dict[str, dict]]:
    """The machine-readable summary of results.json: ``{method: {shift: {"dice", "std", "gap_closed", "seeds"}}}``
    (method keys: :func:`summary_key`, e.g. ``uda_unet_cr``) with the mean foreground Dice over the seeds that ran
    the method, its sample std (None for one seed) and the fraction of the floor -> oracle gap it closes, (method -
    floor) / (oracle - floor) on the means (None when floor or oracle is missing or the gap is under ``MIN_GAP``
    Dice points)."""
    out: Dict[str, Dict[str, dict]] = {}
    for method, _, _ in METHODS:
        for target, shift in targets.items():
            values = [v for v in _values(results, method, target) if v is not None and not np.isnan(v)]
            if not values:
                continue
            floor, oracle = (_values(results, k, target) for k in ("floor", "oracle"))
            gap = float(np.mean(oracle) - np.mean(floor)) if floor and oracle else None
            out.setdefault(summary_key(method, plans), {})[shift] = {
                "dice": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "gap_closed": (float(np.mean(values)) - float(np.mean(floor))) / gap
                if gap is not None and gap >= MIN_GAP else None,
                "seeds": len(values)}
    return out


def _paired_difference(results: dict, method: str, reference: str, target: str) -> Optional[tuple]:
    """(mean of ``method`` - mean of ``reference``, seeds) over the seeds that ran both on ``target``; None if none."""
    rows = [row for row in results["quality"].values()
            if target in row.get(method, {}) and target in row.get(reference, {})]
    if not rows:
        return None
    return (float(np.mean([row[method][target]["mean"] for row in rows])
                  - np.mean([row[reference][target]["mean"] for row in rows])), len(rows))


def goal_table(results: dict, targets: Dict[str, str], plans: str = UNET_PLANS) -> List[str]:
    """The goal per shift, what was measured and the distance: gap closed by centralized UDA (>= 75 % cross-sequence,
    >= 50 % cross-site and cross-age), UDA above its own source-only model and the iteration-matched one (means over
    seeds), test-time UDA within 5 Dice and Fed-MAPSeg within 8 Dice of centralized UDA (on the seeds that ran both:
    those run on fewer seeds are not compared with other seeds' UDA)."""
    table = summary(results, targets, plans)
    uda, own = table.get(summary_key("uda_cr", plans), {}), table.get(summary_key("source_only_cr", plans), {})
    matched = table.get(summary_key("source_only_cr_matched", plans), {})
    lines = ["| shift | goal | measured | met |", "|---|---|---|---|"]

    def row(shift, goal, measured, met):
        lines.append(f"| {shift} | {goal} | {measured} | {'yes' if met else 'no' if met is not None else 'n/a'} |")
    for target, shift in targets.items():
        u = uda.get(shift)
        goal = GOAL_GAP_CLOSED.get(shift)
        if u is None or u["gap_closed"] is None or goal is None:
            row(shift, f"UDA closes >= {100 * goal:.0f} % of the gap" if goal else "-", "n/a (no room or not run)",
                None)
        else:
            row(shift, f"UDA closes >= {100 * goal:.0f} % of the gap", f"{100 * u['gap_closed']:+.0f} % (distance "
                f"{100 * (goal - u['gap_closed']):+.0f} points)" if u["gap_closed"] < goal else
                f"{100 * u['gap_closed']:+.0f} %", u["gap_closed"] >= goal)
        if u is not None and shift in own:
            d = u["dice"] - own[shift]["dice"]
            row(shift, "UDA > its own source-only model (its teacher)", f"{d:+.1f} Dice", d > 0)
        if u is not None and shift in matched:  # the same iterations without target terms: what MPL itself adds
            d = u["dice"] - matched[shift]["dice"]
            row(shift, "UDA > the iteration-matched source-only model", f"{d:+.1f} Dice", d > 0)
        for name, other, limit in (("test-time UDA", "tta_cr", GOAL_TTA_DISTANCE),
                                   ("Fed-MAPSeg", "fed_cr", GOAL_FED_DISTANCE)):
            paired = _paired_difference(results, other, "uda_cr", target)
            if paired is not None:
                d, seeds = paired
                row(shift, f"{name} within {limit:.0f} Dice of UDA", f"{d:+.1f} Dice ({seeds} seed(s) that ran both)",
                    d >= -limit)
    return lines


def quality_table(results: dict, targets: Dict[str, str], plans: str = UNET_PLANS) -> List[str]:
    seeds = len(results["quality"])
    lines = [f"Mean foreground Dice (%) on each target's held-out test labels, mean ± sample std over the seeds "
             f"that ran the method ({seeds} seed(s) in all; a single value = one seed); per class in the third "
             f"table. Gap closed = (method - floor) / (oracle - floor), on the means. Summary keys in "
             f"results.json in brackets.", "",
             "| method | " + " | ".join(targets.values()) + " |", "|---|" + "---|" * len(targets)]
    for method, _, title in METHODS:
        cells = [_stats(_values(results, method, t)) for t in targets]
        if all(c == "n/a" for c in cells):
            continue
        lines.append(f"| {title} (`{summary_key(method, plans)}`) | " + " | ".join(cells) + " |")
    lines += ["", "| method | " + " | ".join(f"gap closed, {v}" for v in targets.values()) + " |",
              "|---|" + "---|" * len(targets)]
    table = summary(results, targets, plans)
    for method, _, title in METHODS:
        key = summary_key(method, plans)
        if method in ("floor", "oracle") or key not in table:
            continue
        cells = []
        for t, shift in targets.items():
            row = table[key].get(shift)
            floor, oracle = (_values(results, k, t) for k in ("floor", "oracle"))
            if row is None or not floor or not oracle:
                cells.append("n/a")
            elif row["gap_closed"] is None:
                cells.append(f"n/a (ceiling - floor = {np.mean(oracle) - np.mean(floor):.1f})")
            else:
                cells.append(f"{100 * row['gap_closed']:+.0f} %")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "Per class (mean over seeds):", "",
              "| method | target | " + " | ".join(CLASS_NAMES.values()) + " |",
              "|---|---|" + "---|" * len(CLASS_NAMES)]
    for method, _, _ in METHODS:
        for t, name in targets.items():
            if not _values(results, method, t):
                continue
            lines.append(f"| {summary_key(method, plans)} | {name} | " + " | ".join(
                _stats([float(np.mean(_values(results, method, t, str(c))))]) for c in CLASS_NAMES) + " |")
    return lines


def tta_table(results: dict, targets: Dict[str, str]) -> List[str]:
    lines = ["Mean foreground Dice (%), the seeds that ran test-time UDA. Source = the "
             "source's fold-0 validation cases; "
             "stage 1 = the contrast-randomized source-only model (the UDA teacher); stage 2 runs at the target site "
             "without source data.", "",
             "| target site | source before | source after | target before | target after |", "|---|---|---|---|---|"]
    for t, name in targets.items():
        seeds = [s for s in results["source"].values() if f"tta_cr/{t}" in s]  # source scored on reference seeds
        before = [s["source_only_cr"]["mean"] for s in seeds]
        after = [s[f"tta_cr/{t}"]["mean"] for s in seeds]
        rows = [row for row in results["quality"].values() if "tta_cr" in row]  # the seeds that ran test-time UDA
        lines.append(f"| {name} | {_stats(before)} | {_stats(after)} | "
                     f"{_stats([row['source_only_cr'][t]['mean'] for row in rows])} | "
                     f"{_stats([row['tta_cr'][t]['mean'] for row in rows])} |")
    return lines


def ablation_table(results: dict, targets: Dict[str, str]) -> List[str]:
    if not results["ablations"]:
        return ["Not run in this invocation (`python -m benchmarks.run --ablations all`, `make benchmarks-ablations`, "
                "after `make benchmarks` in the same work folder: it reuses every finished model)."]
    first = results["quality"][min(results["quality"], key=int)]

    def cells(scores: dict) -> str:  # mean (per class), the per-class Dice shows which class a variant moves
        return " | ".join(f"{scores[t]['mean']:.1f} ({' / '.join(f'{v:.0f}' for v in scores[t]['classes'].values())})"
                          if t in scores else "n/a" for t in targets)

    lines = ["The first seed that ran them (with --ablation_seeds, the paired rows of section 2b cover every seed); "
             "each variant changes one thing of the full method and continues the same kind of source-only model "
             "for the same adapting iterations; mean foreground Dice (%) on the test labels, per class in "
             "parentheses (labels 1 / 2 / ...).", "",
             "| variant | " + " | ".join(targets.values()) + " |", "|---|" + "---|" * len(targets)]
    lines.append("| full method (MAE + contrast-randomized teacher + GLC + hard MPL, mask 0.7, cube 8) | " +
                 cells(first["uda_cr"]) + " |")
    lines.append("| its teacher (the source-only model it continues) | " + cells(first["source_only_cr"]) + " |")
    if "source_only_cr_matched" in first:
        lines.append("| no MPL: the teacher continued without target terms (iteration-matched) | " +
                     cells(first["source_only_cr_matched"]) + " |")
    for name, scores in results["ablations"].items():
        lines.append(f"| {name} | " + cells(scores) + " |")
    return lines


def selection_table(results: dict, targets: Dict[str, str]) -> List[str]:
    epochs = results["selection"]
    if not epochs:
        return ["No per-epoch checkpoints were kept in this run (`python -m benchmarks.run --selection` keeps and "
                "scores them)."]
    best_score = None
    for epoch in ({"adapted": True, **e} for e in epochs):  # the trainer's rule (older results: all adapted)
        best_score = epoch if replaces_best(epoch, best_score) else best_score
    lines = ["Centralized UDA, first seed, one checkpoint per epoch. Score = source validation Dice - 0.5 x mean "
             "L_MPL (label-free), compared among adapted epochs once adaptation ran; the oracle choice uses the "
             "target test labels.", "",
             "| target | Dice of the Score-selected epoch | Dice of the best epoch (oracle) | epochs (Score / oracle) |",
             "|---|---|---|---|"]
    for t, name in targets.items():
        if t not in epochs[0]["target_dice"]:
            continue
        best = max(epochs, key=lambda e: e["target_dice"][t])
        lines.append(f"| {name} | {best_score['target_dice'][t]:.1f} | {best['target_dice'][t]:.1f} | "
                     f"{best_score['epoch']} / {best['epoch']} |")
    if "target_classes" in epochs[0]:
        lines += ["", "Per adapted epoch and class: the student's target test Dice (" + " / ".join(
            CLASS_NAMES.values()) + ") and its voxel accuracy inside the brain, i.e. how right the pseudo-labels "
            "of a teacher this good are (the EMA teacher trails the student).", "",
            "| epoch | " + " | ".join(targets.values()) + " |", "|---|" + "---|" * len(targets)]
        for e in epochs:
            lines.append(f"| {e['epoch']} | " + " | ".join(
                " / ".join(f"{e['target_classes'][t][str(c)]:.1f}" for c in CLASS_NAMES) +
                f" (accuracy {e['target_accuracy'][t]:.1f})" if t in e["target_classes"] else "n/a"
                for t in targets) + " |")
    return lines


def speed_table(speed: Optional[dict]) -> List[str]:
    if not speed:
        return ["Not measured in this run (--skip_speed)."]
    lines = [f"Measured by `{speed['measured_by']}`." if speed.get("measured_by") else "",
             "", "| ratio | value | what was measured |", "|---|---|---|"]
    for row in speed["rows"]:
        lines.append(f"| {row['name']} | {row['ratio']:.2f} | {row['detail']} |")
    return lines


def plots(out: str, results: dict, targets: Dict[str, str]) -> List[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = []
    methods = [(m, t) for m, _, t in METHODS if any(_values(results, m, x) for x in targets)]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(methods)
    for i, (method, title) in enumerate(methods):
        means = [np.mean(_values(results, method, t)) if _values(results, method, t) else 0 for t in targets]
        stds = [np.std(_values(results, method, t)) if len(_values(results, method, t)) > 1 else 0 for t in targets]
        ax.bar(np.arange(len(targets)) + i * width, means, width, yerr=stds, label=method, capsize=2)
    ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2, list(targets.values()))
    ax.set_ylabel("mean foreground Dice (%)")
    ax.legend(fontsize=8, ncol=3)
    ax.set_title("Target test Dice per method (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "dice_per_method.png"), dpi=100)
    plt.close(fig)
    files.append("dice_per_method.png")
    if results["selection"]:
        epochs = results["selection"]
        fig, ax = plt.subplots(figsize=(7, 4))
        x = [e["epoch"] for e in epochs]
        ax.plot(x, [100 * e["score"] for e in epochs], "k-o", label="Score x 100 (label-free)")
        ax.plot(x, [100 * e["source_dice"] for e in epochs], "k--", label="source val Dice x 100 (patches)")
        for t, name in targets.items():
            if t in epochs[0]["target_dice"]:
                ax.plot(x, [e["target_dice"][t] for e in epochs], "-s", label=f"target test Dice, {name}")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.set_title("Centralized UDA: Score vs target Dice (first seed)")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "score_vs_target_dice.png"), dpi=100)
        plt.close(fig)
        files.append("score_vs_target_dice.png")
    return files


def earlier_speed(out: str, work: str, plans: str) -> Optional[dict]:
    """The speed rows of the results.json in ``out`` when an earlier run of the same work folder and plans measured
    them (a later invocation with --skip_speed, e.g. the ablations, keeps them); else None."""
    path = os.path.join(out, "results.json")
    if not os.path.isfile(path):
        return None
    data = json.load(open(path))
    meta, speed = data.get("meta", {}), data.get("speed")
    if not speed or meta.get("work") != work or meta.get("budget", {}).get("plans") != plans:
        return None
    return {**speed, "measured_by": speed.get("measured_by") or f"{meta['command']} at commit {meta['commit']}"}


def write_report(out: str, runner, command: str, results: dict, speed: Optional[dict]) -> None:
    """results.json (the measurements; ``command``, commit, work folder, budget and timings of ``runner``), then
    RESULTS.md. Speed rows without ``measured_by`` were measured by ``command``."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    meta = {"commit": commit + (" (with uncommitted changes)" if dirty else ""),
            "command": command, "work": runner.work,
            "budget": runner.budget.__dict__, "timings_s": runner.timings}
    if speed and not speed.get("measured_by"):
        speed = {**speed, "measured_by": f"{command} at commit {meta['commit']}"}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results, "speed": speed}, f, indent=1, default=str)
    render(out)


def render(out: str) -> None:
    """RESULTS.md and the plots from results.json, whose top-level ``summary`` (:func:`summary`) and ``paired``
    (:func:`benchmarks.paired.paired_table`) it (re)writes."""
    path = os.path.realpath(os.path.join(out, "results.json"))  # a link to it (benchmarks/results.json) stays one
    data = json.load(open(path))
    meta, results, speed = data["meta"], data["results"], data["speed"]
    targets = {str(t): name for t, name in SHIFTS.items()}
    plans = meta["budget"].get("plans", UNET_PLANS)
    data["summary"] = summary(results, targets, plans)
    data["paired"] = paired_table(results["quality"], targets)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump({"summary": data["summary"], "paired": data["paired"], "meta": meta, "results": results,
                   "speed": speed}, f, indent=1, default=str)
    figures = plots(out, results, targets)
    total = sum(meta["timings_s"].values()) / 60
    lines = ["# Benchmarks: does adaptation happen, and what does it cost?", "",
             f"Generated by `{meta['command']}` at commit `{meta['commit']}` on this machine (2 CPU cores, CPU "
             f"preset `{plans}`, demo cohort). The commands took {total:.0f} min in all (summed over the runs "
             f"of the command that built this work folder; per command in results.json).", "",
             f"Budget: {json.dumps(meta['budget'])}", "",
             "## 1. Quality on the demo cohort", ""] + quality_table(results, targets, plans) + [
             "", "## 2. The goal and the distance to it", "",
             "Written before measuring (issue 'Benchmarks v2'): the best centralized UDA closes >= 75 % of the floor -> "
             "oracle gap on cross-sequence and >= 50 % on cross-site and cross-age, and beats its own source-only "
             "model on every shift; test-time UDA within 5 Dice and Fed-MAPSeg within 8 Dice of centralized UDA "
             "(the paper's distances: TTA -1.8 / -2.8 / -2.3, Fed -7.8 / +0.5 / -4.2).", ""] + goal_table(
                 results, targets, plans) + [
             "", "## 2b. Paired differences (bootstrap over cases within seeds and over seeds)", ""] + paired_lines(
                 data["paired"]) + [
             "", "## 3. Test-time UDA (paper Table 3 style)", ""] + tta_table(results, targets) + [
             "", "## 4. Ablations (paper Table 5, Fig. 3)", ""] + ablation_table(results, targets) + [
             "", "## 5. Label-free model selection", ""] + selection_table(results, targets) + [
             "", "## 6. Speed and memory (ratios measured side by side in one run)", ""] + speed_table(speed) + [
             "", "## Plots", ""] + [f"![{f}]({f})" for f in figures] + [""]
    findings = os.path.join(RESULTS, "FINDINGS.md")
    if os.path.isfile(findings):
        lines += ["## What the numbers say", "", f"[FINDINGS.md]({os.path.relpath(findings, out)}): what each "
                  f"benchmark and study measured and what it means, newest first."]
    with open(os.path.join(out, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="?", default=RESULTS,
                        help="folder with results.json; RESULTS.md and the plots are written there (default: "
                             "benchmarks/results/)")
    render(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
