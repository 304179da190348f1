"""``mapseg_nnunet`` command: set-up helpers.

    eval "$(mapseg_nnunet env)"   # exports nnUNet_extTrainer so stock nnUNetv2_train/predict find the trainers
    mapseg_nnunet ext-dir         # the folder nnUNet_extTrainer must contain
    mapseg_nnunet doctor          # versions, paths, and where nnU-Net finds each class
    mapseg_nnunet split -d ID     # splits_final.json for a small labeled cohort (min(5, cases) folds)
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import List, Optional

from mapseg_nnunet.training.trainer_lookup import EXT_DIR, ext_trainer_value, set_ext_trainer_environment


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def doctor() -> int:
    problems = 0
    print("Versions")
    for name in ("mapseg-nnunet", "nnunetv2", "torch", "torchvision", "timm", "dynamic-network-architectures",
                 "batchgeneratorsv2", "acvl-utils", "SimpleITK", "nibabel"):
        print(f"  {name:30s} {_version(name)}")
    import torch
    print(f"  devices: cpu{', cuda x%d' % torch.cuda.device_count() if torch.cuda.is_available() else ''}")
    print("Environment")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        value = os.environ.get(var)
        print(f"  {var:22s} {value if value else '(not set)'}")
        if not value:
            problems += 1
    if EXT_DIR not in (os.environ.get("nnUNet_extTrainer") or "").split(os.pathsep):
        print(f"  ! nnUNet_extTrainer does not contain {EXT_DIR}; run: eval \"$(mapseg_nnunet env)\"")
        set_ext_trainer_environment()
    print("Trainers (as nnUNetv2_train / nnUNetv2_predict resolve them)")
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from mapseg_nnunet.trainers import trainer_classes
    import contextlib
    import io
    for name in sorted(trainer_classes()):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                cls = recursive_find_trainer_class_by_name(name)
            print(f"  {name:34s} {cls.__module__}  ({sys.modules[cls.__module__].__file__})")
        except Exception as e:  # report every failure, keep going
            problems += 1
            print(f"  {name:34s} NOT FOUND: {type(e).__name__}: {e}")
    print("Planners (mapseg_plan_and_preprocess -pl NAME)")
    from mapseg_nnunet.cli.plan_and_preprocess import PLANNERS, find_planner_class
    for name in PLANNERS:
        cls = find_planner_class(name)
        print(f"  {name:34s} {cls.__module__}")
    print("Networks (plans architecture)")
    import pydoc
    from mapseg_nnunet.planning.presets import GLC_UNET_CLASS_NAME, NETWORK_CLASS_NAME
    for name in (NETWORK_CLASS_NAME, GLC_UNET_CLASS_NAME):
        located = pydoc.locate(name)
        print(f"  {name}: {'found' if located is not None else 'NOT FOUND'}")
        problems += located is None
    print("OK" if problems == 0 else f"{problems} problem(s) found")
    return 0 if problems == 0 else 1


def write_split(dataset, folds, overwrite) -> int:
    from batchgenerators.utilities.file_and_folder_operations import join
    from mapseg_nnunet.data.errors import DatasetError
    from mapseg_nnunet.data.paths import dataset_name, nnunet_paths
    from mapseg_nnunet.training.splits import SPLITS_FILE, labeled_identifiers, write_splits
    try:
        raw, preprocessed = nnunet_paths()
        name = dataset_name(dataset)
        splits = write_splits(join(preprocessed, name), labeled_identifiers(join(raw, name)), folds, overwrite)
    except DatasetError as e:
        raise SystemExit(f"ERROR: {e}")
    print(f"Wrote {join(preprocessed, name, SPLITS_FILE)}: {len(splits)} folds (" + "; ".join(
        f"fold {i}: {len(s['train'])} train, val {', '.join(s['val'])}" for i, s in enumerate(splits)) +
          f"). Train folds 0..{len(splits) - 1} with nnUNetv2_train {name} 3d_fullres FOLD ...")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mapseg_nnunet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env", help="print the shell export of nnUNet_extTrainer")
    sub.add_parser("ext-dir", help="print the folder nnUNet_extTrainer must contain")
    sub.add_parser("doctor", help="diagnose the set-up")
    split = sub.add_parser("split", help="write nnU-Net's splits_final.json for a labeled dataset: min(5, cases) "
                                         "folds (leave-one-out below 5 cases), nnU-Net's seeded split")
    split.add_argument("-d", required=True, help="dataset name or id (planned: nnUNet_preprocessed/DatasetXXX)")
    split.add_argument("--folds", type=int, default=None, help="number of folds; default min(5, labeled cases)")
    split.add_argument("--overwrite", action="store_true", help="replace an existing splits_final.json")
    args = parser.parse_args(argv)
    if args.command == "split":
        return write_split(args.d, args.folds, args.overwrite)
    if args.command == "env":
        print(f"export nnUNet_extTrainer={shlex.quote(ext_trainer_value(os.environ.get('nnUNet_extTrainer')))}")
        return 0
    if args.command == "ext-dir":
        print(EXT_DIR)
        return 0
    return doctor()


if __name__ == "__main__":
    sys.exit(main())
