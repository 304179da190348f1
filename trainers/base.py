"""Common base of the MAPSeg trainers: MAPSeg plans (or stock plans adapted on the fly), the MAPSeg network with
its intensity settings (applied to whole cases by the data loaders and the predictor hook), AdamW, atomic
checkpoints."""
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from mapseg_nnunet.atomic import atomic_path
from mapseg_nnunet.inference import predictor_hook
from mapseg_nnunet.optimization import amp_step
from mapseg_nnunet.resume import RNG_KEY, capture_rng_state, in_process_loaders, restore_rng_state
from mapseg_nnunet.plans import adapt_plans, preset_for_device
from mapseg_nnunet.trainer_settings import SETTINGS_KEY, PlansTrainerSettings


class nnUNetTrainerMAPSegBase(PlansTrainerSettings, nnUNetTrainer):
    # Preset used when the plans are not MAPSeg plans (e.g. stock nnUNetPlans): 'auto' = paper on CUDA, cpu else.
    mapseg_preset = "auto"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        plans, adapted = adapt_plans(plans, configuration, preset_for_device(self.mapseg_preset, device))
        super().__init__(plans, configuration, fold, dataset_json, device)
        if adapted:
            self.print_to_log_file(
                f"Plans {self.plans_manager.plans_name} are not MAPSeg plans: using the "
                f"{self.configuration_manager.configuration['mapseg']['preset']} preset (patch "
                f"{self.configuration_manager.patch_size}, MAPSegNet) on data normalised by nnU-Net's own "
                f"scheme. The adapted plans are saved with the model. For MAPSeg's intensity convention plan "
                f"with mapseg_plan_and_preprocess -pl MAPSegPlanner.")
        self.enable_deep_supervision = False
        self.initial_lr = 1e-4
        self.weight_decay = 0.01
        self.use_amp = True  # fp16 autocast + nnU-Net's GradScaler on CUDA (as nnU-Net trains); no-op on CPU
        self.activation_checkpointing = False  # recompute encoder activations in backward (larger patches on GPUs)

    def initialize(self):
        super().initialize()  # PlansTrainerSettings: the plans' trainer settings first, then nnU-Net's
        predictor_hook.unwrap_network(self.network).encoder.activation_checkpointing = self.activation_checkpointing

    def optimization_step(self, compute_loss, clip_norm=None):
        """``compute_loss() -> (loss, *extra)`` under autocast, then backward / clip / step; returns its output."""
        return amp_step(self.optimizer, self.network.parameters(), self.device, self.use_amp, self.grad_scaler,
                        compute_loss, clip_norm)

    @property
    def intensity_settings(self):
        return self.configuration_manager.configuration["mapseg"]["intensity"]

    # Prediction (nnUNetv2_predict, --val, final validation) with global-local collaboration; variants trained
    # without GLC predict with the patch as its own context.
    glc_inference = True

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager,
                                                           num_input_channels, num_output_channels,
                                                           enable_deep_supervision=False)
        network.mapseg_intensity = configuration_manager.configuration["mapseg"]["intensity"]
        settings = configuration_manager.configuration.get(SETTINGS_KEY) or {}
        network.mapseg_glc_inference = bool(settings.get("loss_weights.use_glc", cls.glc_inference))
        predictor_hook.install()
        return network

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # single-output network

    def configure_optimizers(self):
        from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                      betas=(0.9, 0.999))
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    # ---- checkpoints: nnU-Net's dict plus the random states (exact --c) and each trainer's extras
    def update_checkpoint(self, checkpoint: dict) -> None:
        """Add trainer-specific entries to nnU-Net's checkpoint dict before it is written (subclasses extend)."""
        checkpoint[RNG_KEY] = capture_rng_state(self._in_process_loaders())

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus :meth:`update_checkpoint`, written to a temporary file and renamed (never
        half-written)."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        with atomic_path(filename) as tmp:
            stock = tmp + ".nnunet"
            try:
                super().save_checkpoint(stock)
                checkpoint = torch.load(stock, map_location="cpu", weights_only=False, mmap=True)
                self.update_checkpoint(checkpoint)
                torch.save(checkpoint, tmp)
            finally:
                if os.path.exists(stock):
                    os.remove(stock)

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
