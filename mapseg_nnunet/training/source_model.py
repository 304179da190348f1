"""Test-time (source-free) UDA, paper Sec. 3.6: how a target site receives the stage-1 source model.

Stage 1 runs at the source site (``nnUNetTrainerMAPSegUDA_noMPL``: Eq. 9 on the labeled source) and is shipped
with nnU-Net's own model exchange, ``nnUNetv2_export_model_to_zip`` -> ``nnUNetv2_install_pretrained_model_from_zip``.
The zip (plans, dataset.json, fingerprint, checkpoint) is all the target site gets. There,

    mapseg_receive_source_model -t TARGET -d SOURCE -tr nnUNetTrainerMAPSegUDA_noMPL -p MAPSegPlans -f 0

checks the checkpoint, transfers the model's plans to the target (nnU-Net's plan transfer: the same plans renamed
to the target dataset, as ``nnUNetv2_move_plans_between_datasets`` writes them), preprocesses the target's
``imagesTr`` with them (no labels needed) and records the stage-1 checkpoint in the target plans under
``mapseg_source_model``. ``nnUNetv2_train TARGET 3d_fullres FOLD -tr nnUNetTrainerMAPSegTTA -p MAPSegPlans`` then
starts student and teacher from that checkpoint, **segmentation head included** (stock ``-pretrained_weights``
skips every ``.seg_layers.`` key, so it cannot carry a source model). Nothing reads the source's raw or
preprocessed data.
"""
from __future__ import annotations

import copy
import os
import shutil

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json

from mapseg_nnunet.data.atomic import atomic_path
from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.paths import dataset_name, nnunet_paths
from mapseg_nnunet.data.unlabeled import preprocess_unlabeled_dataset

SOURCE_MODEL_KEY = "mapseg_source_model"
STAGE1_TRAINER = "nnUNetTrainerMAPSegUDA_noMPL"


def _load_checkpoint(path: str) -> dict:
    if not isfile(path):
        raise DatasetError(f"{path}: stage-1 checkpoint is missing")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated download, not a torch file
        raise DatasetError(f"{path}: not a readable nnU-Net checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise DatasetError(f"{path}: not an nnU-Net checkpoint (no 'network_weights')")
    return checkpoint


def receive_source_model(target: str | int, model_folder: str, fold: str = "0",
                         checkpoint_name: str = "checkpoint_final.pth", configuration: str = "3d_fullres",
                         progress: bool = True) -> dict:
    """Install the stage-1 model of ``model_folder`` (an nnU-Net trained-model folder) for the target dataset;
    returns the ``mapseg_source_model`` entry written into the target plans."""
    for name in ("plans.json", "dataset.json"):
        if not isfile(join(model_folder, name)):
            raise DatasetError(f"{join(model_folder, name)}: file is missing (not an nnU-Net model folder)")
    plans, source_json = load_json(join(model_folder, "plans.json")), load_json(join(model_folder, "dataset.json"))
    if configuration not in plans["configurations"]:
        raise DatasetError(f"{join(model_folder, 'plans.json')}: configuration {configuration!r} not found")
    checkpoint_path = os.path.abspath(join(model_folder, f"fold_{fold}", checkpoint_name))
    checkpoint = _load_checkpoint(checkpoint_path)
    trained = checkpoint.get("init_args", {}).get("configuration")
    if trained is not None and trained != configuration:
        raise DatasetError(f"{checkpoint_path}: trained for configuration {trained!r}, not {configuration!r}")
    target_name = dataset_name(target)
    source_name, plans_identifier = plans["dataset_name"], plans["plans_name"]
    entry = {"source_dataset": source_name, "trainer": checkpoint.get("trainer_name"), "fold": str(fold),
             "configuration": configuration, "checkpoint": checkpoint_path,
             "epochs_trained": checkpoint.get("current_epoch")}
    target_plans = copy.deepcopy(plans)
    target_plans["dataset_name"] = target_name
    target_plans[SOURCE_MODEL_KEY] = entry
    _, preprocessed = nnunet_paths()
    fingerprint = join(model_folder, "dataset_fingerprint.json")
    if isfile(fingerprint):  # nnU-Net's on_train_start copies it next to the model
        os.makedirs(join(preprocessed, target_name), exist_ok=True)
        with atomic_path(join(preprocessed, target_name, "dataset_fingerprint.json")) as tmp:
            shutil.copyfile(fingerprint, tmp)
    preprocess_unlabeled_dataset(target_name, target_plans, plans_identifier, configuration, source_json,
                                 source_name, progress)
    return entry


def source_model_entry(plans: dict, plans_file_hint: str = "") -> dict:
    """The ``mapseg_source_model`` entry of the target plans, or a clear error saying how to create it."""
    entry = plans.get(SOURCE_MODEL_KEY)
    if entry is None:
        raise RuntimeError(
            f"plans {plans.get('plans_name')} of {plans.get('dataset_name')} {plans_file_hint}carry no stage-1 "
            f"source model. Test-time UDA starts from a source model: install it with "
            f"nnUNetv2_install_pretrained_model_from_zip, then run mapseg_receive_source_model -t "
            f"{plans.get('dataset_name')} -d SOURCE -tr {STAGE1_TRAINER} -p {plans.get('plans_name')} -f FOLD")
    return entry


def load_source_weights(network: torch.nn.Module, entry: dict) -> dict:
    """Load the whole stage-1 network (encoder, decoder, segmentation head) into ``network``; returns the
    checkpoint's metadata. DDP / torch.compile prefixes are removed."""
    path = entry["checkpoint"]
    checkpoint = _load_checkpoint(path)
    state = {}
    for key, value in checkpoint["network_weights"].items():
        for prefix in ("module.", "_orig_mod."):
            key = key[len(prefix):] if key.startswith(prefix) else key
        state[key] = value
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise DatasetError(f"{path}: the stage-1 weights do not fit the network of these plans: {e}") from e
    return {k: checkpoint.get(k) for k in ("trainer_name", "current_epoch")}
