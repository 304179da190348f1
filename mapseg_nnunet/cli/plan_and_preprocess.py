"""``mapseg_plan_and_preprocess``: nnU-Net's plan-and-preprocess with a MAPSeg planner.

nnU-Net 2.8 looks planners up only inside its own package, so this command takes the same arguments as
``nnUNetv2_plan_and_preprocess`` and runs nnU-Net's own API (fingerprint extraction, ``plan_experiment_dataset``
with the planner class, the plans' preprocessor) around the checks and atomic outputs of
:mod:`mapseg_nnunet.planning.preprocess`."""
from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

from batchgenerators.utilities.file_and_folder_operations import join

from mapseg_nnunet.cli import add_progress_flag
from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.planning.preprocess import check_raw_dataset, preprocess_atomically

DEFAULT_PLANNER = "MAPSegPlanner"
PLANNERS = ("MAPSegPlanner", "MAPSegPlannerCPU", "MAPSegResEncPlanner", "MAPSegResEncPlannerCPU",
            "nnUNetPlannerCPU")


def find_planner_class(name: str):
    from mapseg_nnunet.planners import mapseg_planner
    if hasattr(mapseg_planner, name):
        return getattr(mapseg_planner, name)
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    cls = recursive_find_python_class(join(nnunetv2.__path__[0], "experiment_planning"), name,
                                      current_module="nnunetv2.experiment_planning")
    if cls is None:
        raise SystemExit(f"Unknown planner {name!r}. MAPSeg planners: {', '.join(PLANNERS)}.")
    return cls


def plan_and_preprocess(dataset_ids: List[int], planner: str = DEFAULT_PLANNER,
                        configurations: Sequence[str] = ("3d_fullres",), num_processes: Optional[List[int]] = None,
                        fingerprint_extractor: str = "DatasetFingerprintExtractor", npfp: int = 8,
                        verify_dataset_integrity: bool = False, clean: bool = False, no_pp: bool = False,
                        gpu_memory_target: Optional[float] = None, preprocessor_name: str = "DefaultPreprocessor",
                        overwrite_target_spacing=None, overwrite_plans_name: Optional[str] = None,
                        verbose: bool = False, progress: bool = True) -> str:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiment_dataset
    planner_class = find_planner_class(planner)
    for d in dataset_ids:
        check_raw_dataset(d, progress)
    print("Fingerprint extraction...")
    extract_fingerprints(dataset_ids, fingerprint_extractor, npfp, verify_dataset_integrity, clean, verbose,
                         show_progress_bar=progress)
    print(f"Experiment planning with {planner_class.__name__}...")
    plans_identifier = None
    for d in dataset_ids:
        _, plans_identifier = plan_experiment_dataset(d, planner_class, gpu_memory_target, preprocessor_name,
                                                      overwrite_target_spacing, overwrite_plans_name)
    if not no_pp:
        print("Preprocessing...")
        n = num_processes if num_processes else [4] * len(configurations)
        n = n * len(configurations) if len(n) == 1 else n
        for d in dataset_ids:
            preprocess_atomically(d, plans_identifier, configurations, n, verbose, progress)
    return plans_identifier


def plan_and_preprocess_entry(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="nnUNetv2_plan_and_preprocess with a MAPSeg planner: MAPSegPlanner / MAPSegPlannerCPU (the "
                    "paper's network; plans MAPSegPlans / MAPSegPlansCPU), MAPSegResEncPlanner / "
                    "MAPSegResEncPlannerCPU (nnU-Net's residual-encoder U-Net; MAPSegResEncPlans / "
                    "MAPSegResEncPlansCPU), or nnU-Net's own, e.g. nnUNetPlannerCPU (the budget-matched stock "
                    "baseline; nnUNetPlansCPU).")
    parser.add_argument("-d", nargs="+", type=int, required=True, help="[REQUIRED] List of dataset IDs.")
    parser.add_argument("-pl", type=str, default=DEFAULT_PLANNER,
                        help=f"[OPTIONAL] Experiment planner class: {', '.join(PLANNERS)}, or any of nnU-Net's. "
                             f"Default: {DEFAULT_PLANNER}.")
    parser.add_argument("-fpe", type=str, default="DatasetFingerprintExtractor",
                        help="[OPTIONAL] Dataset fingerprint extractor class. Default: DatasetFingerprintExtractor.")
    parser.add_argument("-npfp", type=int, default=8,
                        help="[OPTIONAL] Processes for fingerprint extraction. Default: 8")
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="[RECOMMENDED] Also run nnU-Net's dataset integrity check (labels, geometry).")
    parser.add_argument("--no_pp", action="store_true",
                        help="[OPTIONAL] Only run fingerprint extraction and experiment planning.")
    parser.add_argument("--clean", action="store_true",
                        help="[OPTIONAL] Overwrite an existing fingerprint.")
    parser.add_argument("-gpu_memory_target", default=None, type=float,
                        help="[OPTIONAL] Passed to the planner; MAPSeg presets fix patch and batch size.")
    parser.add_argument("-preprocessor_name", default="DefaultPreprocessor", type=str,
                        help="[OPTIONAL] Preprocessor class inside nnunetv2.preprocessing. Default: "
                             "DefaultPreprocessor.")
    parser.add_argument("-overwrite_target_spacing", default=None, nargs="+",
                        help="[OPTIONAL] Custom target spacing for 3d_fullres (three numbers).")
    parser.add_argument("-overwrite_plans_name", default=None,
                        help="[OPTIONAL] Custom plans identifier (then use -p NAME in later commands).")
    parser.add_argument("-c", nargs="+", default=["3d_fullres"],
                        help="[OPTIONAL] Configurations to preprocess. MAPSeg plans have only 3d_fullres.")
    parser.add_argument("-np", type=int, nargs="+", default=None,
                        help="[OPTIONAL] Processes for preprocessing (one number, or one per configuration). "
                             "Default: 4")
    parser.add_argument("--verbose", action="store_true", help="Verbose output.")
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    try:
        plan_and_preprocess(args.d, args.pl, args.c, args.np, args.fpe, args.npfp, args.verify_dataset_integrity,
                            args.clean, args.no_pp, args.gpu_memory_target, args.preprocessor_name,
                            args.overwrite_target_spacing, args.overwrite_plans_name, args.verbose,
                            not args.no_pbar)
    except DatasetError as e:
        raise SystemExit(f"ERROR: {e}")
