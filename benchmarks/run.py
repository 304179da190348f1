"""Does adaptation happen, and what does it cost? Regenerates ``benchmarks/results/RESULTS.md``, ``results.json``
(with its ``summary``; ``benchmarks/results.json`` links to it) and the plots.

    python -m benchmarks.run                      # full: 3 seeds, the U-Net path, speed (<= 90 min)
    python -m benchmarks.run --ablations all      # then: the ablations too (same work folder, finished runs reused)
    python -m benchmarks.run --quick              # 1 seed, tiny budgets: checks the whole pipeline in minutes
    (make benchmarks / make benchmarks-ablations / make benchmarks-quick do the set-up first)

Everything runs through the stock nnU-Net commands (plan, train, predict) on the demo cohort in ``--work``
(default ``work_dirs/benchmarks``), on the CPU U-Net preset ``MAPSegResEncPlansCPU`` (``--plans MAPSegPlansCPU``:
the paper's network, which needs far longer budgets; ``benchmarks/results/learning_curve/learning_curve.md``).
Budgets, seeds and ablation switches are plans variants (``mapseg_plans_variant``), so each model folder records what
it was trained with. A finished training or prediction is not repeated when the command is run again (delete
``--work`` to start over).

Rows of the quality table (summary keys with the backbone, e.g. ``uda_unet_cr``), each on the three targets'
held-out test labels:

* ``floor``: stock ``nnUNetTrainer`` on stock nnU-Net plans at the CPU preset's patch and batch (``nnUNetPlannerCPU``),
  source labels only, the source-side budget; first seed;
* ``floor_da5``: the same with nnU-Net's stronger augmentation (``nnUNetTrainerDA5``), the stock row a user tries
  first under a domain shift; first seed;
* ``source_only``: MAPSeg's source terms only (``nnUNetTrainerMAPSegUDA_noMPL``) from the MAE encoder; first seed;
* ``source_only_cr``: the same with contrast randomization of the source views (the UDA teacher); every seed;
* ``source_only_cr_matched``: ``source_only_cr`` continued for ``adapt_epochs`` without target terms, the
  iteration-matched control of UDA (what masked pseudo-labeling itself adds); every seed;
* ``uda_cr``: centralized MAPSeg (hard masked pseudo-labels, EMA teacher, GLC, contrast-randomized source views)
  continuing ``source_only_cr`` for ``adapt_epochs`` on the three targets together; every seed;
* ``tta_cr``: test-time UDA per target from ``source_only_cr`` (source Dice before / after too); first seed;
* ``fed_cr``: Fed-MAPSeg (Flower simulation, one client per target) continuing ``source_only_cr`` for ``fed_rounds``;
  first seed;
* ``oracle``: stock ``nnUNetTrainer`` trained on each target's own training images *with* labels; first seed.
"""
from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
import time

from .evaluation import evaluate_all
from .report import earlier_speed, write_report
from .cohort import PLANNERS, UNET_PLANS
from .runner import ABLATIONS, FULL, QUICK, Runner
from .speed import measure_all
from .study import REPO, RESULTS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny budgets (pipeline check, minutes)")
    parser.add_argument("--work", default=None, help="work folder. Default: work_dirs/benchmarks[_quick]")
    parser.add_argument("--out", default=None,
                        help="where RESULTS.md and the plots go. Default: benchmarks/results/ (full), WORK/report "
                             "(quick)")
    parser.add_argument("--skip_speed", action="store_true",
                        help="no speed and memory measurements (the report keeps those an earlier run of the same "
                             "work folder wrote to --out)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="run only these seeds (a partial run; the report says which ran)")
    parser.add_argument("--ablations", nargs="*", default=None,
                        help="run these ablations by name, or 'all' (default: the budget's; none for the full run): "
                             + "; ".join(ABLATIONS))
    parser.add_argument("--ablation_seeds", type=int, nargs="+", default=None,
                        help="run the ablations on these seeds (default: the first); with several, each gets a "
                             "paired interval against the iteration-matched control")
    parser.add_argument("--selection", action="store_true",
                        help="also the label-free selection check: the first seed's UDA keeps a checkpoint per epoch "
                             "and each is scored on every target's test cases (about 10 min more)")
    parser.add_argument("--plans", default=None, choices=sorted(PLANNERS),
                        help=f"the MAPSeg plans of the table (default {UNET_PLANS})")
    args = parser.parse_args(argv)
    budget = copy.deepcopy(QUICK if args.quick else FULL)
    if args.seeds is not None:
        budget.seeds = args.seeds
    if args.plans is not None:
        budget.plans = args.plans
    budget.selection = budget.selection or args.selection
    if args.ablation_seeds is not None:
        budget.ablation_seeds = args.ablation_seeds
    if args.ablations is not None:
        names = list(ABLATIONS) if args.ablations == ["all"] else args.ablations
        unknown = set(names) - set(ABLATIONS)
        if unknown:
            parser.error(f"unknown ablations {sorted(unknown)}; choose from {sorted(ABLATIONS)} or 'all'")
        budget.ablations = names
    work = os.path.abspath(args.work or os.path.join(REPO, "work_dirs", "benchmarks_quick" if args.quick
                                                     else "benchmarks"))
    out = os.path.abspath(args.out or (os.path.join(work, "report") if args.quick else RESULTS))
    os.makedirs(out, exist_ok=True)
    runner = Runner(work, budget, args.quick)
    command = "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    runner.setup()
    runner.plan(budget.plans)
    maes = {seed: runner.mae(seed) for seed in budget.seeds}
    seeds = {seed: runner.seed_runs(seed, maes[seed]) for seed in budget.seeds}
    fed = runner.federated(budget.seeds[0], seeds[budget.seeds[0]]["source_only_cr"])
    ablations = {seed: runner.ablations(maes[seed], seeds[seed], budget.ablations, seed)
                 for seed in budget.ablation_seed_list()}
    runner.say("prediction and evaluation of every model on the targets' test labels")
    start = time.time()
    results = evaluate_all(runner, seeds, fed, ablations)
    runner.timings["evaluation (this invocation)"] = time.time() - start
    if args.skip_speed:
        speed = earlier_speed(out, work, budget.plans)
    else:
        runner.say("speed and memory ratios")
        start = time.time()
        speed = measure_all(runner, budget.speed_repeats)
        runner.timings["speed (this invocation)"] = time.time() - start
    write_report(out, runner, command, results, speed)
    runner.say(f"done: {os.path.join(out, 'RESULTS.md')}")


if __name__ == "__main__":
    main()
