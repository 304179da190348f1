"""How stock nnU-Net finds the MAPSeg trainers (``nnUNet_extTrainer`` pointing at the shim folder
``mapseg_nnunet/nnunet_ext``), and building a trainer exactly as ``nnUNetv2_train`` does."""
from __future__ import annotations

import contextlib
import io
import os
from typing import Optional

import torch

EXT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nnunet_ext")


def ext_trainer_value(current: Optional[str]) -> str:
    """``nnUNet_extTrainer`` with the shim folder first, other entries kept."""
    entries = [p for p in (current or "").split(os.pathsep) if p and os.path.abspath(p) != EXT_DIR]
    return os.pathsep.join([EXT_DIR] + entries)


def set_ext_trainer_environment() -> None:
    """In-process equivalent of ``eval "$(mapseg_nnunet env)"`` (nnU-Net 2.8 reads the variable lazily)."""
    os.environ["nnUNet_extTrainer"] = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))


# nnU-Net 2.8's class search iterates sys.modules without a copy; another thread importing at that moment (Flower's
# simulation runs the ServerApp in a thread next to its own) makes it fail with this message, and a retry succeeds
SEARCH_RACE = "dictionary changed size during iteration"


def build_trainer(dataset: str, trainer: str, plans: str, configuration: str, fold, device: torch.device,
                  continue_training: bool = False, attempts: int = 3):
    """An nnU-Net trainer as ``nnUNetv2_train`` builds it (class lookup through ``nnUNet_extTrainer``; the lookup
    is retried when it meets :data:`SEARCH_RACE`)."""
    from nnunetv2.run import run_training
    set_ext_trainer_environment()
    fold = fold if str(fold) == "all" else int(fold)
    for attempt in range(1, attempts + 1):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the class search prints every module it imports
                return run_training.get_trainer_from_args(str(dataset), configuration, fold, trainer, plans,
                                                          continue_training, device=device)
        except RuntimeError as e:
            if SEARCH_RACE not in str(e) or attempt == attempts:
                raise
