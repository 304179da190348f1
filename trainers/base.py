"""Common base of the MAPSeg trainers: MAPSeg plans (or stock plans adapted on the fly), the MAPSeg network with
its intensity settings (applied to whole cases by the data loaders and the predictor hook), AdamW with a
scheduler hook, atomic checkpoints with the random states, and nnU-Net's epoch loop with three hooks that the
variants override: :meth:`should_stop_early`, :meth:`is_new_best`, :meth:`log_epoch_summary` (what one epoch
runs stays nnU-Net's ``train_step`` / ``validation_step`` and their ``on_*`` hooks)."""
import io
from time import time

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from mapseg_nnunet.architectures.unwrap import unwrap_network
from mapseg_nnunet.data.atomic import atomic_path
from mapseg_nnunet.data.foreground_box import BOX_PATCH_PROBABILITY, OUTSIDE_BOX_IS_BACKGROUND
from mapseg_nnunet.inference import predictor_hook
from mapseg_nnunet.method.losses import MAPSegLossWeights
from mapseg_nnunet.planning.mapseg_configuration import adapt_plans
from mapseg_nnunet.training.optimization import amp_step
from mapseg_nnunet.training.progress import IterationProgress
from mapseg_nnunet.training.resume import RNG_KEY, capture_rng_state, in_process_loaders, restore_rng_state
from mapseg_nnunet.training.settings import PlansTrainerSettings, effective_setting
from mapseg_nnunet.training.splits import SplitCheck


class nnUNetTrainerMAPSegBase(SplitCheck, PlansTrainerSettings, nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        plans, adapted = adapt_plans(plans, configuration)
        super().__init__(plans, configuration, fold, dataset_json, device)
        if adapted:
            self.print_to_log_file(
                f"Plans {self.plans_manager.plans_name} are not MAPSeg plans: MAPSeg runs on their U-Net (inside the "
                f"GLC U-Net), patch {self.configuration_manager.patch_size}, batch "
                f"{self.configuration_manager.batch_size} and nnU-Net's normalisation, without deep supervision. "
                f"The adapted plans are saved with the model. For the MAPSeg presets' patch and network, plan with "
                f"mapseg_plan_and_preprocess -pl MAPSegResEncPlanner or MAPSegPlanner.")

    def set_defaults(self) -> None:
        super().set_defaults()
        self.enable_deep_supervision = False
        self.initial_lr, self.weight_decay, self.betas = 1e-4, 0.01, (0.9, 0.999)
        self.use_amp = True  # fp16 autocast + nnU-Net's GradScaler on CUDA (as nnU-Net trains); no-op on CPU
        self.activation_checkpointing = False  # recompute encoder activations in backward (larger patches on GPUs)
        self.keep_epoch_checkpoints = False  # analysis: also keep checkpoint_epoch_NNN.pth after every epoch
        self.progress_interval_s = 60.0  # a progress line (iteration, it/s) this often within an epoch; 0: off
        # outside the case's foreground box every prediction is background (mapseg_nnunet.data.foreground_box);
        # oversample_foreground_percent (nnU-Net's name) is the share of local patches drawn inside that box, the
        # others anywhere in the case (1 by default: benchmarks/results/whole_volume/whole_volume.md)
        self.outside_box_is_background = OUTSIDE_BOX_IS_BACKGROUND
        self.oversample_foreground_percent = BOX_PATCH_PROBABILITY

    def initialize(self):
        super().initialize()  # PlansTrainerSettings: the plans' settings first, then nnU-Net's
        unwrap_network(self.network).activation_checkpointing = self.activation_checkpointing

    @property
    def intensity_settings(self):
        return self.configuration_manager.configuration["mapseg"]["intensity"]

    # ---- network: MAPSegNet with its prediction settings (the only plugin code nnUNetv2_predict runs)
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager,
                                                           num_input_channels, num_output_channels,
                                                           enable_deep_supervision=False)
        network.mapseg_intensity = configuration_manager.configuration["mapseg"]["intensity"]
        # variants trained without GLC predict with the patch as its own context
        network.mapseg_glc_inference = bool(effective_setting(cls, configuration_manager, "loss_weights.use_glc",
                                                              MAPSegLossWeights.use_glc))
        network.mapseg_outside_box_is_background = bool(effective_setting(
            cls, configuration_manager, "outside_box_is_background", OUTSIDE_BOX_IS_BACKGROUND))
        predictor_hook.install()
        return network

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # single-output network

    # ---- optimisation: AdamW for every MAPSeg trainer; the learning-rate schedule is the variants' hook
    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                      betas=self.betas)
        return optimizer, self.make_lr_scheduler(optimizer)

    def make_lr_scheduler(self, optimizer: torch.optim.Optimizer):
        """The learning-rate schedule of the variant (each MAPSeg trainer follows the paper's)."""
        raise NotImplementedError

    def optimization_step(self, compute_loss, clip_norm=None):
        """``compute_loss() -> (loss, *extra)`` under autocast, then backward / clip / step; returns its output."""
        return amp_step(self.optimizer, self.network.parameters(), self.device, self.use_amp, self.grad_scaler,
                        compute_loss, clip_norm)

    # ---- the epoch loop: nnU-Net's, split so that the federated server can run its halves per round
    def run_training(self):
        self.on_train_start()
        while self.current_epoch < self.num_epochs and not self.should_stop_early():
            self.train_epoch()
            self.validate_epoch()
            self.on_epoch_end()
        self.on_train_end()

    def train_epoch(self) -> None:
        self.on_epoch_start()
        self.on_train_epoch_start()
        progress = IterationProgress(self.num_iterations_per_epoch, self.progress_interval_s, self.print_to_log_file,
                                     self.current_epoch)
        outputs = []
        for i in range(self.num_iterations_per_epoch):
            outputs.append(self.train_step(next(self.dataloader_train)))
            progress.update(i + 1)
        self.on_train_epoch_end(outputs)

    def validate_epoch(self) -> None:
        with torch.no_grad():
            self.on_validation_epoch_start()
            self.on_validation_epoch_end([self.validation_step(next(self.dataloader_val))
                                          for _ in range(self.num_val_iterations_per_epoch)])

    def should_stop_early(self) -> bool:
        """Checked before every epoch."""
        return False

    def is_new_best(self) -> bool:
        """Whether this epoch's model replaces ``checkpoint_best.pth`` (UDA: the Score; MAE: reconstruction skill)."""
        raise NotImplementedError

    def log_epoch_summary(self) -> None:
        get = self.logger.get_value
        self.print_to_log_file("train_loss", np.round(get("train_losses", step=-1), decimals=4))
        self.print_to_log_file("val_loss", np.round(get("val_losses", step=-1), decimals=4))
        self.print_to_log_file("Pseudo dice", [np.round(i, decimals=4) for i in
                                               get("dice_per_class_or_region", step=-1)])
        self.print_to_log_file(f"Epoch time: {self.epoch_seconds():.2f} s")

    def epoch_seconds(self) -> float:
        get = self.logger.get_value
        return get("epoch_end_timestamps", step=-1) - get("epoch_start_timestamps", step=-1)

    def on_epoch_end(self):
        """nnU-Net's epoch end with the hooks: summary, periodic / best / per-epoch checkpoints, progress plot."""
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        self.log_epoch_summary()
        if (self.current_epoch + 1) % self.save_every == 0 and self.current_epoch != self.num_epochs - 1:
            self.save_checkpoint(join(self.output_folder, "checkpoint_latest.pth"))
        if self.is_new_best():
            self.save_checkpoint(join(self.output_folder, "checkpoint_best.pth"))
        if self.keep_epoch_checkpoints:
            self.save_checkpoint(join(self.output_folder, f"checkpoint_epoch_{self.current_epoch:03d}.pth"))
        if self.local_rank == 0:
            self.logger.plot_progress_png(self.output_folder)
        self.current_epoch += 1

    # ---- checkpoints: nnU-Net's dict plus the random states (exact --c) and each trainer's extras
    def update_checkpoint(self, checkpoint: dict) -> None:
        """Add trainer-specific entries to nnU-Net's checkpoint dict before it is written (subclasses extend)."""
        checkpoint[RNG_KEY] = capture_rng_state(self._in_process_loaders())

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus :meth:`update_checkpoint`, written once, to a temporary file that is then
        renamed (never half-written). nnU-Net's own dict is serialised into memory and read back from there."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        stock = io.BytesIO()
        super().save_checkpoint(stock)  # torch.save accepts a file-like object
        stock.seek(0)
        checkpoint = torch.load(stock, map_location="cpu", weights_only=False)
        self.update_checkpoint(checkpoint)
        with atomic_path(filename) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False, mmap=True)  # lazy: extras
        self._resumed_rng_state = checkpoint.get(RNG_KEY)  # restored once the data loaders exist
        self.restore_from_checkpoint(checkpoint)

    def restore_from_checkpoint(self, checkpoint: dict) -> None:
        """Counterpart of :meth:`update_checkpoint` (subclasses extend)."""

    def on_train_start(self):
        super().on_train_start()  # builds (and primes) the data loaders
        state, self._resumed_rng_state = getattr(self, "_resumed_rng_state", None), None
        if state is not None:
            unmatched = restore_rng_state(state, self._in_process_loaders())
            self.print_to_log_file("Random states restored from the checkpoint" + (
                f"; data loaders {unmatched} run in background workers now or then, so the data order differs "
                f"from an uninterrupted run (exact with nnUNet_n_proc_DA=0)" if unmatched else ""))

    def _in_process_loaders(self) -> dict:
        return in_process_loaders({"train": getattr(self, "dataloader_train", None),
                                   "val": getattr(self, "dataloader_val", None)})
