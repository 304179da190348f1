"""nnUNetTrainerMAPSegUDA: centralized MAPSeg UDA.

Current state: trains the MAPSeg network (patch-only global context) on the labeled source with nnU-Net's
Dice+CE; the adaptation terms (masked pseudo-labeling with an EMA teacher, GLC on the registered targets) are
not wired in yet."""
import torch

from mapseg_nnunet.trainers.base import nnUNetTrainerMAPSegBase


class nnUNetTrainerMAPSegUDA(nnUNetTrainerMAPSegBase):
    pass


class nnUNetTrainerMAPSegUDA_5epochs(nnUNetTrainerMAPSegUDA):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5


class nnUNetTrainerMAPSegUDA_1epoch(nnUNetTrainerMAPSegUDA):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1


class nnUNetTrainerMAPSegUDA_smoke(nnUNetTrainerMAPSegUDA):
    """2 epochs of 4 iterations (2 validation iterations), no test-time mirroring: demo and tests."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 4
        self.num_val_iterations_per_epoch = 2

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        settings = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return settings
