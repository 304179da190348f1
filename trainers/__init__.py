"""nnU-Net trainer classes of mapseg_nnunet, found by stock nnU-Net through ``nnUNet_extTrainer`` (the shim
``mapseg_nnunet/nnunet_ext/mapseg_nnunet_trainers.py`` re-exports :func:`trainer_classes`, so the list is kept
in one place: the trainer modules themselves)."""
import importlib
import inspect
from typing import Dict

TRAINER_MODULES = ("mae", "uda", "tta", "federated", "stock")


def trainer_classes() -> Dict[str, type]:
    """``{name: class}`` of every nnU-Net trainer defined in :data:`TRAINER_MODULES`."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    found = {}
    for module_name in TRAINER_MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, nnUNetTrainer) and obj.__module__ == module.__name__:
                found[name] = obj
    return found
