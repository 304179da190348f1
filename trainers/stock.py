"""Stock nnU-Net training that honours the plans' trainer settings (budget, seed, ``final_validation``): the
budget-matched nnU-Net baseline of the benchmarks. Nothing else differs from ``nnUNetTrainer`` (its U-Net,
augmentation, deep supervision, SGD and poly schedule)."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from mapseg_nnunet.training.settings import PlansTrainerSettings


class nnUNetTrainer_settingsFromPlans(PlansTrainerSettings, nnUNetTrainer):
    pass
