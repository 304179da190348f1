"""nnU-Net trainer classes of mapseg_nnunet (found by nnU-Net through ``nnUNet_extTrainer``)."""
TRAINER_NAMES = ["nnUNetTrainerMAPSegFed", "nnUNetTrainerMAPSegFed_smoke", "nnUNetTrainerMAPSegFed_demo",
                 "nnUNetTrainerMAPSegFedClient",
                 "nnUNetTrainerMAPSegMAE", "nnUNetTrainerMAPSegMAE_5epochs", "nnUNetTrainerMAPSegMAE_smoke",
                 "nnUNetTrainerMAPSegMAE_demo",
                 "nnUNetTrainerMAPSegTTA", "nnUNetTrainerMAPSegTTA_smoke", "nnUNetTrainerMAPSegTTA_demo",
                 "nnUNetTrainerMAPSegUDA",
                 "nnUNetTrainerMAPSegUDA_1epoch", "nnUNetTrainerMAPSegUDA_5epochs", "nnUNetTrainerMAPSegUDA_noGLC",
                 "nnUNetTrainerMAPSegUDA_noMPL", "nnUNetTrainerMAPSegUDA_smoke", "nnUNetTrainerMAPSegUDA_noMPL_smoke",
                 "nnUNetTrainerMAPSegUDA_demo", "nnUNetTrainerMAPSegUDA_noMPL_demo",
                 "nnUNetTrainer_settingsFromPlans"]
