"""``mapseg_plan_and_preprocess``: nnU-Net's plan-and-preprocess with a MAPSeg planner.

nnU-Net 2.8 looks planners up only inside its own package, so this command takes the same arguments as
``nnUNetv2_plan_and_preprocess`` and runs nnU-Net's own API (fingerprint extraction, ``plan_experiment_dataset``
with the planner class, the plans' preprocessor). It adds: an image check naming the bad file (missing file,
channel count, NaN), and atomic outputs (plans written then renamed; preprocessed data written into a
``.partial`` folder and renamed when complete)."""
from __future__ import annotations

import copy
import os
import shutil
from typing import Sequence

from batchgenerators.utilities.file_and_folder_operations import isdir, join, load_json

def check_raw_dataset(dataset_id: int, progress: bool = True) -> None:
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from mapseg_nnunet.data.errors import DatasetError
    from mapseg_nnunet.data.input_checks import check_dataset_images
    from mapseg_nnunet.data.intensity import survey_and_remember
    folder = join(nnUNet_raw, convert_id_to_dataset_name(dataset_id))
    if not os.path.isfile(join(folder, "dataset.json")):
        raise DatasetError(f"{join(folder, 'dataset.json')}: file is missing")
    dataset_json = load_json(join(folder, "dataset.json"))
    dataset = get_filenames_of_train_images_and_targets(folder, dataset_json)
    if len(dataset) == 0:
        raise DatasetError(f"{join(folder, 'imagesTr')}: no training cases found")
    labels_folder = join(folder, "labelsTr")
    if isdir(labels_folder):
        ending = dataset_json["file_ending"]
        for f in sorted(os.listdir(labels_folder)):
            if f.endswith(ending) and f[:-len(ending)] not in dataset:
                raise DatasetError(f"{join(labels_folder, f)}: label without image "
                                   f"({join(folder, 'imagesTr', f[:-len(ending)] + '_0000' + ending)} is missing)")
    if len(dataset) != dataset_json.get("numTraining", len(dataset)):
        raise DatasetError(f"{join(folder, 'dataset.json')}: numTraining is {dataset_json['numTraining']} but "
                           f"{len(dataset)} cases were found in imagesTr")
    first_image = next(iter(dataset.values()))["images"][0]
    reader = determine_reader_writer_from_dataset_json(dataset_json, first_image)()
    # surveyed while checked: the planner's intensity survey then reads no image again
    check_dataset_images(dataset, len(dataset_json["channel_names"]), reader, progress, survey=survey_and_remember)


def preprocess_atomically(dataset_id: int, plans_identifier: str, configurations: Sequence[str],
                          num_processes: Sequence[int], verbose: bool = False, progress: bool = True) -> None:
    """Preprocess into ``<data_identifier>.partial`` folders and rename them when complete, so an interrupted
    run never leaves a half-written dataset under the real name."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from mapseg_nnunet.data.atomic import replace_directory, save_json_atomic
    folder = join(nnUNet_preprocessed, convert_id_to_dataset_name(dataset_id))
    plans = load_json(join(folder, plans_identifier + ".json"))
    manager = PlansManager(plans)
    configurations = [c for c in configurations if c in manager.available_configurations]
    partial_plans_id = plans_identifier + ".partial"
    partial_plans = copy.deepcopy(plans)
    final_ids = {}
    for c in configurations:
        final_ids[c] = manager.get_configuration(c).data_identifier
        partial_plans["configurations"][c]["data_identifier"] = final_ids[c] + ".partial"
    save_json_atomic(partial_plans, join(folder, partial_plans_id + ".json"))
    try:
        preprocess_dataset(dataset_id, partial_plans_id, configurations, list(num_processes)[:len(configurations)]
                           or [1], verbose, progress)
        for final in final_ids.values():
            replace_directory(join(folder, final + ".partial"), join(folder, final))
    finally:
        os.remove(join(folder, partial_plans_id + ".json"))
        for final in final_ids.values():
            shutil.rmtree(join(folder, final + ".partial"), ignore_errors=True)
