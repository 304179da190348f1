"""nnU-Net trainer classes of mapseg_nnunet (found by nnU-Net through ``nnUNet_extTrainer``)."""
TRAINER_NAMES = ["nnUNetTrainerMAPSegMAE", "nnUNetTrainerMAPSegTTA", "nnUNetTrainerMAPSegUDA",
                 "nnUNetTrainerMAPSegUDA_1epoch", "nnUNetTrainerMAPSegUDA_5epochs", "nnUNetTrainerMAPSegUDA_smoke"]
