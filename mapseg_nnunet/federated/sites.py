"""The nnU-Net side of a federation, independent of Flower: the server trainer that lives across rounds (resumed
from its last completed round) and one client round at a site."""
from __future__ import annotations

from typing import Optional, Protocol, Tuple

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join

from mapseg_nnunet.compat import finish_loader
from mapseg_nnunet.training.trainer_lookup import build_trainer


class FederatedServerTrainer(Protocol):
    """What the federation needs of the server's nnU-Net trainer (``nnUNetTrainerMAPSegFed``), beyond nnU-Net's
    trainer interface (``on_train_start``, ``on_train_end``, ``perform_actual_validation``, ``current_epoch``,
    ``num_epochs``, ``output_folder``, ``network``, ``print_to_log_file``)."""
    client_iterations: int

    @property
    def round_lr(self) -> float:
        """The learning rate the clients use this round."""

    def begin_round(self) -> dict:
        """The round's source steps; returns the teacher weights to broadcast."""

    def end_round(self, global_state: dict, client_mpl: float) -> None:
        """The aggregated teachers become the global model; validation, Score, checkpoints."""


class FederatedClientTrainer(Protocol):
    """What the federation needs of a site's nnU-Net trainer (``nnUNetTrainerMAPSegFedClient``)."""

    def client_round(self, teacher_state: dict, lr: float, iterations: int) -> Tuple[dict, dict]:
        """Steps on the site's target from the broadcast teacher; returns (teacher weights, metrics)."""


# the members each role's trainer class must define (checked on the class: round_lr reads the optimiser, which an
# uninitialised trainer does not have yet)
REQUIRED_MEMBERS = {FederatedServerTrainer: ("round_lr", "begin_round", "end_round"),
                    FederatedClientTrainer: ("client_round",)}


def _require(trainer, protocol, name: str, role: str):
    missing = [m for m in REQUIRED_MEMBERS[protocol] if not hasattr(type(trainer), m)]
    if missing:
        raise TypeError(f"{name} cannot be a federation's {role}: it lacks {', '.join(missing)} "
                        f"({protocol.__name__}; use nnUNetTrainerMAPSegFed for the server, "
                        f"nnUNetTrainerMAPSegFedClient for clients, or subclasses of them)")
    return trainer


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def start_server(source: str, trainer: str, plans: str, configuration: str, fold, device: torch.device,
                 pretrained_weights: Optional[str] = None) -> FederatedServerTrainer:
    """The server trainer, ready for ``begin_round``: resumed from its last completed round when a checkpoint
    exists (``checkpoint_final`` = the federation is finished), else from ``pretrained_weights`` (e.g. the MAE
    encoder) or from scratch."""
    from nnunetv2.run.run_training import maybe_load_checkpoint
    server = _require(build_trainer(source, trainer, plans, configuration, fold, device, continue_training=True),
                      FederatedServerTrainer, trainer, "server")
    resumable = any(isfile(join(server.output_folder, f)) for f in ("checkpoint_final.pth", "checkpoint_latest.pth"))
    if resumable:
        maybe_load_checkpoint(server, True, False)
        server.print_to_log_file(f"Federation resumed after round {server.current_epoch} of {server.num_epochs}")
    else:
        maybe_load_checkpoint(server, False, False, pretrained_weights)
    server.on_train_start()
    return server


def client_round(dataset: str, plans: str, configuration: str, teacher_state: dict, lr: float, iterations: int,
                 device: torch.device, trainer: str) -> tuple:
    """One client round on the site's registered target ``dataset`` (all its cases): returns
    ``(teacher weights, number of cases, metrics)``."""
    client = _require(build_trainer(dataset, trainer, plans, configuration, "all", device), FederatedClientTrainer,
                      trainer, "client")
    client.initialize()
    client.dataloader_train, client.dataloader_val = client.get_dataloaders()
    try:
        state, metrics = client.client_round(teacher_state, lr, iterations)
    finally:
        for loader in (client.dataloader_train, client.dataloader_val):
            finish_loader(loader)
    return state, len(client.dataset_class(client.preprocessed_dataset_folder).identifiers), metrics


def finish_server(server: FederatedServerTrainer) -> None:
    """checkpoint_final.pth (nnU-Net's on_train_end) and the source validation of the global model."""
    server.on_train_end()
    server.perform_actual_validation(False)
