"""Common base of the MAPSeg trainers: MAPSeg plans (or stock plans adapted on the fly), the MAPSeg network with
its intensity settings (applied to whole cases by the data loaders and the predictor hook), AdamW, atomic
checkpoints."""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from mapseg_nnunet.atomic import atomic_path
from mapseg_nnunet.inference import predictor_hook
from mapseg_nnunet.optimization import amp_step
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

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file and renamed (never half-written)."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        with atomic_path(filename) as tmp:
            super().save_checkpoint(tmp)
