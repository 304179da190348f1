"""Trainers whose method has not landed yet: discoverable by nnU-Net, they stop with a clear message."""
from mapseg_nnunet.trainers.base import nnUNetTrainerMAPSegBase


class _NotYetAvailable(nnUNetTrainerMAPSegBase):
    missing = ""

    def run_training(self):
        raise NotImplementedError(f"{self.__class__.__name__}: {self.missing} is not implemented yet in "
                                  f"mapseg_nnunet; see the README's roadmap.")


class nnUNetTrainerMAPSegTTA(_NotYetAvailable):
    missing = "test-time (source-free) adaptation"
