"""``mapseg_register_targets``: register unlabeled target datasets to a labeled source dataset."""
from __future__ import annotations

import argparse
from typing import List, Optional

from mapseg_nnunet.cli import add_progress_flag
from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.paths import dataset_name
from mapseg_nnunet.data.target_registry import ROLES, load_registry, register_target


def register_targets_entry(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Register unlabeled target datasets to a labeled source dataset: check compatibility, "
                    "preprocess the targets' imagesTr with the source plans, record the link so that MAPSeg "
                    "trainers on the source find them.")
    parser.add_argument("-s", required=True, help="[REQUIRED] Source dataset name or id (planned already).")
    parser.add_argument("-t", nargs="+", default=[], help="Target dataset names or ids.")
    parser.add_argument("-p", default="MAPSegPlans", help="Plans identifier of the source. Default: MAPSegPlans")
    parser.add_argument("-c", default="3d_fullres", help="Configuration. Default: 3d_fullres")
    parser.add_argument("--role", default="target", choices=ROLES,
                        help="'target': adapted to (UDA, federated clients); 'pool': extra unlabeled images used "
                             "only by MAE pretraining. Default: target")
    parser.add_argument("--list", action="store_true", help="List the registered datasets of the source and exit.")
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    if not args.list and not args.t:
        parser.error("give target datasets with -t, or --list")
    try:
        for t in args.t:
            entry = register_target(args.s, t, args.p, args.c, args.role, not args.no_pbar)
            print(f"Registered {entry['dataset_name']} ({entry['num_cases']} cases, role {entry['role']}) to "
                  f"{dataset_name(args.s)} with {args.p}/{args.c}")
        for t in load_registry(args.s)["targets"]:
            print(f"{t['dataset_name']}: role {t['role']}, {t['num_cases']} cases, {t['plans_identifier']}/"
                  f"{t['configuration']}, test labels: {'yes' if t['has_test_labels'] else 'no'}")
    except DatasetError as e:
        raise SystemExit(f"ERROR: {e}")
