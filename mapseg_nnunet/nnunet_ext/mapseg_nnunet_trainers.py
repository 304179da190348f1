"""Shim for nnU-Net's ``nnUNet_extTrainer`` lookup: point the variable at this folder (``eval "$(mapseg_nnunet
env)"``). nnU-Net imports this file as a top-level module and drops it afterwards; the classes keep their
canonical ``mapseg_nnunet.trainers.*`` identity, so they stay picklable for spawned workers."""
from mapseg_nnunet.trainers import trainer_classes

globals().update(trainer_classes())
