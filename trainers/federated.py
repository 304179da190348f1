"""Fed-MAPSeg (paper Sec. 3.5, Algorithm 1): the server and client sides as nnU-Net trainers. The Flower apps in
``mapseg_nnunet.federated`` drive them; nothing here talks to the network.

``nnUNetTrainerMAPSegFed`` is the server, on the labeled source. One nnU-Net epoch is one federated round: the
EMA teacher restarts from the global student, ``num_iterations_per_epoch`` steps of Eq. 9 update student and
teacher (``begin_round`` returns the teacher to broadcast), then the clients' teachers, averaged by Flower's
FedAvg, become the new global student (``end_round``: source validation, Score with the clients' L_MPL,
checkpoints). Its network is the global model, so ``nnUNetv2_predict -tr nnUNetTrainerMAPSegFed`` uses it.

``nnUNetTrainerMAPSegFedClient`` is a client round on one site's unlabeled target (fold ``all``): student and
teacher from the broadcast teacher, ``client_iterations`` steps of Eq. 10 with the EMA update, the teacher goes
back. Its optimiser starts fresh every round (the paper re-initialises the client models each round)."""
import numpy as np
import torch

from mapseg_nnunet.architectures.unwrap import unwrap_network
from mapseg_nnunet.method.losses import source_loss
from mapseg_nnunet.method.selection import selection_score
from mapseg_nnunet.method.teacher import make_teacher
from mapseg_nnunet.trainers.uda import nnUNetTrainerMAPSegUDA
from mapseg_nnunet.training.schedules import FixedLR, RoundCosineLR, set_learning_rate
from mapseg_nnunet.training.variants import CONTRAST_RANDOMIZATION, FED_DEMO, FED_SMOKE


def load_weights(network: torch.nn.Module, state: dict) -> None:
    """Load received weights (possibly float64 after averaging) in the network's own dtypes."""
    network = unwrap_network(network)
    own = network.state_dict()
    network.load_state_dict({k: torch.as_tensor(v).to(own[k].dtype) for k, v in state.items()})


class nnUNetTrainerMAPSegFed(nnUNetTrainerMAPSegUDA):
    def set_defaults(self) -> None:
        super().set_defaults()
        self.loss_weights.use_mpl = False  # the server has the source only (Eq. 9); targets stay at the clients
        self.num_epochs = 100  # federated rounds R (paper)
        self.num_iterations_per_epoch = 250  # server steps per round T_s
        self.client_iterations = 250  # client steps per round T_t, sent with each round
        self.initial_lr, self.final_lr = 1e-4, 1e-6
        self.save_every = 1  # checkpoint_latest after every round: a restarted server continues from there
        self._client_mpl = 0.0

    def make_lr_scheduler(self, optimizer):
        return RoundCosineLR(optimizer, self.initial_lr, self.final_lr, self.num_epochs)

    @property
    def round_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def should_stop_early(self) -> bool:
        return False  # the federation runs its R rounds

    def train_step(self, batch: dict) -> dict:
        def compute_loss():
            return (source_loss(self.network, self._seg_loss, self.batch_to_device(batch["source"]), self.loss_weights,
                                self.masking)[0],)

        return self.teacher_student_step(compute_loss, update_teacher=True)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.teacher, self.teacher_steps = make_teacher(self.network), 0  # the round's teacher: the global student

    def begin_round(self) -> dict:
        """Algorithm 1 lines 2-8: teacher <- global student, T_s source steps; returns the teacher to broadcast."""
        self.train_epoch()
        return unwrap_network(self.teacher).state_dict()

    def end_round(self, global_state: dict, client_mpl: float) -> None:
        """Lines 19-20: the aggregated teachers become the global student; validation, Score, checkpoints."""
        load_weights(self.network, global_state)
        self._client_mpl = client_mpl
        self.validate_epoch()
        self.on_epoch_end()

    def selection_record(self) -> dict:
        dice = float(self.logger.get_value("mean_fg_dice", step=-1))
        return {"source_dice": dice, "client_mpl": self._client_mpl, "score": selection_score(dice, self._client_mpl)}


class nnUNetTrainerMAPSegFedClient(nnUNetTrainerMAPSegUDA):
    """One site's client: its own unlabeled cases (fold ``all``), Eq. 10 steps from the broadcast teacher."""

    def get_dataloaders(self):
        return self.target_site_dataloaders()

    def make_lr_scheduler(self, optimizer):
        return FixedLR()  # the server sets the round's learning rate

    def client_round(self, teacher_state: dict, lr: float, iterations: int) -> tuple:
        """Algorithm 1 lines 10-17; returns (teacher weights, metrics)."""
        load_weights(self.network, teacher_state)
        self.teacher, self.teacher_steps = make_teacher(self.network), 0
        self.reset_epoch_records()
        set_learning_rate(self.optimizer, lr)
        self.network.train()
        losses = [float(self.self_supervised_step(next(self.dataloader_train))["loss"]) for _ in range(iterations)]
        return unwrap_network(self.teacher).state_dict(), {"loss": float(np.mean(losses)),
                                                          "mpl": float(np.mean(self._epoch_mpl))}


class nnUNetTrainerMAPSegFed_smoke(nnUNetTrainerMAPSegFed):
    """2 rounds of 2 server and 2 client iterations, 1 validation iteration: tests."""
    trainer_settings = FED_SMOKE


class nnUNetTrainerMAPSegFed_demo(nnUNetTrainerMAPSegFed):
    """CPU demo budget: 8 rounds of 40 server and 40 client iterations, learning rate 1e-3 -> 1e-5."""
    trainer_settings = FED_DEMO


class nnUNetTrainerMAPSegFed_contrastRandomized_demo(nnUNetTrainerMAPSegFed_demo):
    """The demo budget with the server's source views contrast-randomized, as make demo's centralized UDA."""
    trainer_settings = CONTRAST_RANDOMIZATION
