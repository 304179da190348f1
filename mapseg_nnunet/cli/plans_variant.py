"""``mapseg_plans_variant``: a plans variant carrying trainer settings (see
:mod:`mapseg_nnunet.planning.plans_variant`)."""
from __future__ import annotations

import argparse
from typing import List, Optional

from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.planning.plans_variant import make_plans_variant, parse_assignments


def plans_variant_entry(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a plans variant that shares the preprocessed data of existing plans and carries "
                    "trainer settings (ablation switches, budget, seed) for nnUNetv2_train -p VARIANT.")
    parser.add_argument("-d", required=True, help="[REQUIRED] Dataset name or id.")
    parser.add_argument("-p", required=True, help="[REQUIRED] Plans identifier to copy, e.g. MAPSegPlansCPU.")
    parser.add_argument("-o", required=True, help="[REQUIRED] Plans identifier of the variant.")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                        help="Trainer settings, values in JSON, e.g. masking.ratio=0.5 loss_weights.use_glc=false "
                             "num_epochs=4 seed=1")
    parser.add_argument("-c", nargs="+", default=None, help="Configurations to change. Default: all that own data")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing variant.")
    args = parser.parse_args(argv)
    try:
        path = make_plans_variant(args.d, args.p, args.o, parse_assignments(args.set), args.c, args.overwrite)
    except (DatasetError, ValueError) as e:
        raise SystemExit(f"ERROR: {e}")
    print(f"Wrote {path}")
