"""Shim for nnU-Net's ``nnUNet_extTrainer`` lookup: point the variable at this folder (``eval "$(mapseg_nnunet
env)"``). nnU-Net imports this file as a top-level module and drops it afterwards; the classes keep their
canonical ``mapseg_nnunet.trainers.*`` identity, so they stay picklable for spawned workers."""
from mapseg_nnunet.trainers.federated import (nnUNetTrainerMAPSegFed, nnUNetTrainerMAPSegFed_demo,  # noqa: F401
                                              nnUNetTrainerMAPSegFed_smoke, nnUNetTrainerMAPSegFedClient)
from mapseg_nnunet.trainers.mae import (nnUNetTrainerMAPSegMAE, nnUNetTrainerMAPSegMAE_5epochs,  # noqa: F401
                                        nnUNetTrainerMAPSegMAE_smoke, nnUNetTrainerMAPSegMAE_demo)
from mapseg_nnunet.trainers.tta import (nnUNetTrainerMAPSegTTA, nnUNetTrainerMAPSegTTA_smoke,  # noqa: F401
                                        nnUNetTrainerMAPSegTTA_demo)
from mapseg_nnunet.trainers.uda import (nnUNetTrainerMAPSegUDA, nnUNetTrainerMAPSegUDA_1epoch,  # noqa: F401
                                        nnUNetTrainerMAPSegUDA_5epochs, nnUNetTrainerMAPSegUDA_noGLC,
                                        nnUNetTrainerMAPSegUDA_noMPL, nnUNetTrainerMAPSegUDA_smoke,
                                        nnUNetTrainerMAPSegUDA_noMPL_smoke,
                                        nnUNetTrainerMAPSegUDA_demo, nnUNetTrainerMAPSegUDA_noMPL_demo)

from mapseg_nnunet.trainers.stock import nnUNetTrainer_settingsFromPlans  # noqa: F401
