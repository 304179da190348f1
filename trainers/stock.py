"""Stock nnU-Net training that honours the plans' trainer settings (budget, seed, ``final_validation``): the
budget-matched nnU-Net baseline of the benchmarks. Nothing else differs from ``nnUNetTrainer`` (its U-Net,
augmentation, deep supervision, SGD and poly schedule), except that a cohort too small for nnU-Net's 5-fold split
is reported before training with what to do (:mod:`mapseg_nnunet.training.splits`), and that with a ``seed``
nnU-Net's own loaders run in seeded background workers (:mod:`mapseg_nnunet.data.augmenter`), so the same seed
trains the same model."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from mapseg_nnunet.data.augmenter import seeded_nnunet_augmenters
from mapseg_nnunet.training.settings import PlansTrainerSettings
from mapseg_nnunet.training.splits import SplitCheck


class nnUNetTrainer_settingsFromPlans(SplitCheck, PlansTrainerSettings, nnUNetTrainer):
    def get_dataloaders(self):
        return seeded_nnunet_augmenters(super().get_dataloaders, self.device, self.seed)
