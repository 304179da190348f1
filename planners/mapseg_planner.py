"""Experiment planners writing MAPSeg plans: a single ``3d_fullres`` configuration with the preset's fixed
patch size and a network of the GLC seam. The paper's network (``MAPSegPlanner``) keeps raw intensities in
preprocessing (``NoNormalization``) and records MAPSeg's per-scan percentile normalisation in the plans (applied
to whole cases by the trainers and the predictor); the ResEnc U-Net (``MAPSegResEncPlanner``) uses nnU-Net's
normalisation. Spacing and resampling are nnU-Net's (median source spacing), so that every registered target
cohort is brought to the source's physical voxel size.

Run through ``mapseg_plan_and_preprocess -d ID -pl MAPSegPlanner`` (nnU-Net looks up planners only inside its
own package)."""
import contextlib
import io
from typing import List, Optional, Tuple, Union

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import \
    ResEncUNetPlanner
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from mapseg_nnunet.data.atomic import save_json_atomic
from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.intensity import (describe_findings, intensity_settings_for_channels, survey_dataset,
                                          survey_findings)
from mapseg_nnunet.planning.mapseg_configuration import FUSION_STRIDE, glc_unet_architecture, mapseg_block
from mapseg_nnunet.planning.presets import PRESETS


class PresetPlanner(ExperimentPlanner):
    """A planner sized by a MAPSeg preset (``preset_name``), writing a single 3d_fullres configuration to plans
    ``default_plans_name`` (None: the preset's plans name) unless nnU-Net's ``-overwrite_plans_name`` is given."""
    preset_name = "paper"
    default_plans_name: Optional[str] = None

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: Optional[str] = None,
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...]] = None,
                 suppress_transpose: bool = False):
        self.preset = PRESETS[self.preset_name]
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or self.default_plans_name or self.preset.plans_name, overwrite_target_spacing,
                         suppress_transpose)
        self.lowres_creation_threshold = 0  # no 3d_lowres configuration

    def static_estimate_VRAM_usage(self, *args, **kwargs):
        return 1  # the preset fixes the patch: nnU-Net's GPU-memory search (which builds the network) has nothing to do


class MAPSegPlanner(PresetPlanner):
    preset_name = "paper"
    configuration_name = "3d_fullres"


    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                    _cache):
        """The preset fixes patch, batch and network, so nnU-Net's U-Net topology search and VRAM estimate are
        not run; spacing, resampling and the data identifier follow nnU-Net."""
        resampling_data, resampling_data_kwargs, resampling_seg, resampling_seg_kwargs = self.determine_resampling()
        resampling_softmax, resampling_softmax_kwargs = self.determine_segmentation_softmax_export_fn()
        channel_names = list(self.dataset_json["channel_names"].values())
        return {
            "data_identifier": data_identifier,
            "preprocessor_name": self.preprocessor_name,
            "batch_size": self.preset.batch_size,
            "patch_size": list(self.preset.patch_size)[-len(spacing):],
            "median_image_size_in_voxels": median_shape,
            "spacing": spacing,
            # preprocessing keeps raw intensities; MAPSeg normalises whole cases (mapseg.intensity)
            "normalization_schemes": ["NoNormalization"] * len(channel_names),
            "use_mask_for_norm": [False] * len(channel_names),
            "resampling_fn_data": resampling_data.__name__,
            "resampling_fn_seg": resampling_seg.__name__,
            "resampling_fn_data_kwargs": resampling_data_kwargs,
            "resampling_fn_seg_kwargs": resampling_seg_kwargs,
            "resampling_fn_probabilities": resampling_softmax.__name__,
            "resampling_fn_probabilities_kwargs": resampling_softmax_kwargs,
            "architecture": self.preset.architecture(),
            "mapseg": mapseg_block(self.preset, intensity_settings_for_channels(channel_names,
                                                                                self.intensity_findings())),
        }

    def plan_experiment(self):
        self.check_cases_fit_patch()
        self.intensity_findings()
        # nnU-Net prints a "2D U-Net configuration" (which MAPSeg plans drop) and 3d_fullres before save_plans
        # completes it: print what is saved instead
        with contextlib.redirect_stdout(io.StringIO()):
            plans = super().plan_experiment()
        print_saved_configuration(plans, self.configuration_name,
                                  join(nnUNet_preprocessed, self.dataset_name, self.plans_identifier + ".json"))
        return plans

    def intensity_findings(self) -> list:
        """What the source images hold per channel (negative values, a non-zero constant background), surveyed
        once from the raw images, printed, and recorded in the plans next to the rule of each channel."""
        if getattr(self, "_intensity_findings", None) is None:
            from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
            channel_names = list(self.dataset_json["channel_names"].values())
            first_image = next(iter(self.dataset.values()))["images"][0]
            reader = determine_reader_writer_from_dataset_json(self.dataset_json, first_image)()
            findings = survey_findings(channel_names, survey_dataset(self.dataset, reader))
            rules = intensity_settings_for_channels(channel_names)["channel_rules"]
            for line in describe_findings(findings, rules, f"{self.dataset_name} intensities"):
                print(line)
            self._intensity_findings = findings
        return self._intensity_findings

    def check_cases_fit_patch(self) -> None:
        """Every training case must cover the patch after resampling (MAPSeg crops local patches from, and
        resizes the whole case to, the patch size)."""
        target_spacing = self.determine_fullres_target_spacing()
        patch = np.array(self.preset.patch_size)
        for case, shape, spacing in zip(self.dataset.keys(), self.dataset_fingerprint["shapes_after_crop"],
                                        self.dataset_fingerprint["spacings"]):
            new_shape = np.array(compute_new_shape(shape, spacing, target_spacing))
            if np.any(new_shape < patch):
                raise DatasetError(
                    f"{self.dataset[case]['images'][0]}: case {case} is {new_shape.tolist()} voxels after cropping "
                    f"and resampling to spacing {np.round(target_spacing, 3).tolist()}, smaller than the "
                    f"{patch.tolist()} patch of {self.plans_identifier}. Use a planner with a smaller patch "
                    f"(MAPSegPlannerCPU: {list(PRESETS['cpu'].patch_size)}), resample to a finer spacing "
                    f"(-overwrite_target_spacing) or remove the case.")

    def save_plans(self, plans):
        """Keep only the MAPSeg configuration; write atomically; keep other configurations of an existing file
        (as nnU-Net does)."""
        plans["configurations"] = {self.configuration_name: plans["configurations"][self.configuration_name]}
        plans["configurations"][self.configuration_name]["batch_dice"] = True  # as the reference (batch Dice)
        recursive_fix_for_json_export(plans)
        plans_file = join(nnUNet_preprocessed, self.dataset_name, self.plans_identifier + ".json")
        if isfile(plans_file):
            old = load_json(plans_file)["configurations"]
            old.pop(self.configuration_name, None)
            plans["configurations"].update(old)
        save_json_atomic(plans, plans_file)


def print_saved_configuration(plans: dict, configuration: str, plans_file: str) -> None:
    print(f"3D fullres configuration ({configuration}) of {plans['plans_name']}:")
    print(plans["configurations"][configuration])
    print()
    print(f"Plans were saved to {plans_file}")


class MAPSegPlannerCPU(MAPSegPlanner):
    """Same code path, CPU-sized preset (32^3 patches, width 32): demo, tests, benchmarks."""
    preset_name = "cpu"


class nnUNetPlannerCPU(PresetPlanner):
    """Stock nnU-Net plans (nnU-Net's U-Net topology search and normalisation) whose 3d_fullres patch and batch
    are those of the MAPSeg CPU preset: the budget-matched stock nnU-Net baseline of the benchmarks (plans
    ``nnUNetPlansCPU``). nnU-Net searches the U-Net for that patch; nothing else changes."""
    preset_name = "cpu"
    default_plans_name = "nnUNetPlansCPU"

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                    _cache):
        patch = np.array(self.preset.patch_size)[-len(spacing):]
        # nnU-Net starts its patch search from the median shape: start it from the preset's patch instead
        plan = super().get_plans_for_configuration(spacing, np.minimum(median_shape, patch), data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        plan["median_image_size_in_voxels"] = median_shape
        plan["batch_size"] = self.preset.batch_size
        return plan


class MAPSegResEncPlanner(MAPSegPlanner, ResEncUNetPlanner):
    """MAPSeg plans on nnU-Net's residual-encoder U-Net (``MAPSegResEncPlans``): spacing, resampling, patch and batch
    as :class:`MAPSegPlanner`; the network is the ``ResidualEncoderUNet`` that nnU-Net's ResEnc planner derives for
    the preset's patch, wrapped in the GLC U-Net with the fusion at output stride ``FUSION_STRIDE`` (4, MAPSegNet's
    latent stride; the U-Net keeps the two finer skips of the local patch). Intensities follow nnU-Net (z-score for
    MRI, its CT scheme for CT, done by preprocessing into the plans' own data ``MAPSegResEncPlans_3d_fullres``) and
    the MAPSeg intensity step is off: on the demo cohort the same U-Net fits the source better on z-scored data
    than on MAPSeg's percentile scaling and transfers better to the other site and age
    (``benchmarks/results/backbone_budget/backbone_budget.md``). MAE pretraining then masks to 0, the foreground
    mean, as nnssl does."""
    default_plans_name = "MAPSegResEncPlans"

    def generate_data_identifier(self, configuration_name: str) -> str:
        # nnU-Net's ResEnc planners reuse nnUNetPlans' data; these plans own theirs (a user's nnUNetPlans may differ)
        return ExperimentPlanner.generate_data_identifier(self, configuration_name)

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                    _cache):
        if len(spacing) != 3:  # nnU-Net also plans a 2d configuration; save_plans keeps only 3d_fullres
            return MAPSegPlanner.get_plans_for_configuration(self, spacing, median_shape, data_identifier,
                                                             approximate_n_voxels_dataset, _cache)
        patch = np.array(self.preset.patch_size)[-len(spacing):]
        plan = ResEncUNetPlanner.get_plans_for_configuration(self, spacing, np.minimum(median_shape, patch),
                                                             data_identifier, approximate_n_voxels_dataset, _cache)
        plan.update({"patch_size": patch.tolist(), "batch_size": self.preset.batch_size,
                     "median_image_size_in_voxels": median_shape,
                     "architecture": glc_unet_architecture(plan["architecture"], FUSION_STRIDE),
                     "mapseg": mapseg_block(self.preset, None)})  # None: nnU-Net's normalisation, no MAPSeg step
        return plan

    def intensity_findings(self) -> None:
        return None  # MAPSeg's intensity rules are not used: nnU-Net normalises


class MAPSegResEncPlannerCPU(MAPSegResEncPlanner):
    """:class:`MAPSegResEncPlanner` at the CPU preset's patch and batch (``MAPSegResEncPlansCPU``): demo, tests,
    benchmarks. Half nnU-Net's ResEnc width (16-128 features instead of 32-256 at this patch;
    ``benchmarks/results/backbone_budget/backbone_budget.md``): on 2 CPU cores an iteration costs a third, and per
    second of training the narrower U-Net fits the source better."""
    preset_name = "cpu"
    default_plans_name = "MAPSegResEncPlansCPU"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.UNet_base_num_features = 16  # nnU-Net's own width setting (32 by default)

