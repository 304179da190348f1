"""Stock nnU-Net training that honours the plans' trainer settings (budget, seed, ``final_validation``): the
budget-matched nnU-Net baseline of the benchmarks. Nothing else differs from ``nnUNetTrainer`` (its U-Net,
augmentation, deep supervision, SGD and poly schedule), except that a cohort too small for nnU-Net's 5-fold split
is reported before training with what to do (:mod:`mapseg_nnunet.training.splits`)."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from mapseg_nnunet.training.settings import PlansTrainerSettings
from mapseg_nnunet.training.splits import SplitCheck


class nnUNetTrainer_settingsFromPlans(SplitCheck, PlansTrainerSettings, nnUNetTrainer):
    pass
