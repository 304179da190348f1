"""``mapseg_receive_source_model``: the target site of test-time UDA installs a stage-1 source model (see
:mod:`mapseg_nnunet.training.source_model`)."""
from __future__ import annotations

import argparse
from typing import List, Optional

from batchgenerators.utilities.file_and_folder_operations import join, load_json

from mapseg_nnunet.cli import add_progress_flag
from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.paths import dataset_name
from mapseg_nnunet.training.source_model import STAGE1_TRAINER, receive_source_model


def receive_source_model_entry(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Test-time UDA, target site: install a stage-1 source model (an nnU-Net model folder, e.g. "
                    "from nnUNetv2_install_pretrained_model_from_zip) for an unlabeled target dataset: transfer "
                    "its plans, preprocess the target's imagesTr with them, record the checkpoint for "
                    "nnUNetTrainerMAPSegTTA. Source data are not needed.")
    parser.add_argument("-t", required=True, help="[REQUIRED] Target dataset name or id (raw imagesTr).")
    parser.add_argument("-d", help="Source dataset name or id of the installed model (in nnUNet_results).")
    parser.add_argument("-tr", default=STAGE1_TRAINER, help=f"Stage-1 trainer. Default: {STAGE1_TRAINER}")
    parser.add_argument("-p", default="MAPSegPlans", help="Plans identifier. Default: MAPSegPlans")
    parser.add_argument("-c", default="3d_fullres", help="Configuration. Default: 3d_fullres")
    parser.add_argument("-m", help="Model folder (instead of -d/-tr/-p/-c): the folder holding plans.json and "
                                   "fold_X/.")
    parser.add_argument("-f", default="0", help="Fold of the stage-1 model. Default: 0")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="Checkpoint file. Default: "
                                                                     "checkpoint_final.pth")
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    if (args.d is None) == (args.m is None):
        parser.error("give the source model either as -d SOURCE [-tr -p -c] or as -m MODEL_FOLDER")
    try:
        if args.m is None:
            from nnunetv2.utilities.file_path_utilities import get_output_folder
            model_folder = get_output_folder(dataset_name(args.d), args.tr, args.p, args.c)
        else:
            model_folder = args.m
        entry = receive_source_model(args.t, model_folder, args.f, args.chk, args.c, not args.no_pbar)
    except DatasetError as e:
        raise SystemExit(f"ERROR: {e}")
    print(f"{dataset_name(args.t)} received the stage-1 model of {entry['source_dataset']} ({entry['trainer']}, "
          f"fold {entry['fold']}, {entry['epochs_trained']} epochs): {entry['checkpoint']}\n"
          f"Next: nnUNetv2_train {args.t} {args.c} FOLD -tr nnUNetTrainerMAPSegTTA -p "
          f"{load_json(join(model_folder, 'plans.json'))['plans_name']}")
