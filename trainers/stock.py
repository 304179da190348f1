"""Stock nnU-Net training that honours the plans' trainer settings (budget, seed, ``final_validation``): the
budget-matched nnU-Net baseline of the benchmarks. Nothing else differs from ``nnUNetTrainer`` (its U-Net,
augmentation, deep supervision, SGD and poly schedule), except that a cohort too small for nnU-Net's 5-fold split
is reported before training with what to do (:mod:`mapseg_nnunet.training.splits`), and that with a ``seed``
nnU-Net's own loaders run in seeded background workers (:mod:`mapseg_nnunet.data.augmenter`), so the same seed
trains the same model. ``nnUNetTrainerDA5_settingsFromPlans``: the same for nnU-Net's stronger augmentation
(``nnUNetTrainerDA5``), the stock trainer a user tries first under a domain shift."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5

from mapseg_nnunet.data.augmenter import seeded_nnunet_augmenters
from mapseg_nnunet.training.settings import PlansTrainerSettings
from mapseg_nnunet.training.splits import SplitCheck


class SettingsFromPlans(SplitCheck, PlansTrainerSettings):
    """The plans' trainer settings on a stock trainer, and its loaders seeded by the ``seed`` setting."""

    def get_dataloaders(self):
        return seeded_nnunet_augmenters(super().get_dataloaders, self.device, self.seed)


class nnUNetTrainer_settingsFromPlans(SettingsFromPlans, nnUNetTrainer):
    pass


class nnUNetTrainerDA5_settingsFromPlans(SettingsFromPlans, nnUNetTrainerDA5):
    pass
