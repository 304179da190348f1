"""nnUNetTrainerMAPSegMAE: 3D multi-scale masked-autoencoder pretraining (paper Sec. 3.2, Suppl. Tab. 2).

Every image of the source dataset and of its registered targets and pools (domain-balanced; labels ignored)
yields a local patch and the whole case resized to the patch; 70 % of 8^3 (local) and 4^3 (global) cubes are
zeroed (``masking.*`` settings, as in UDA: the background value of MAPSeg's [0, 1] convention, the foreground mean
of nnU-Net's z-scored data, as nnssl masks); one encoder-decoder reconstructs both; loss = MSE on masked voxels,
local + global. Validation measures the reconstruction skill against the mean-intensity baseline, which nnU-Net's
progress plot shows in its pseudo-Dice curve and whose EMA selects ``checkpoint_best.pth``. The checkpoint's
encoder initialises the UDA / TTA trainers through stock ``-pretrained_weights`` (the MAE decoder is dropped)."""
from time import perf_counter

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs

from mapseg_nnunet.architectures import MAPSegMAENet
from mapseg_nnunet.data.augmenter import wrap_in_augmenter
from mapseg_nnunet.data.global_local import GlobalLocalDataLoader
from mapseg_nnunet.data.sample_geometry import NO_AUGMENTATION, GlobalLocalAugmentation
from mapseg_nnunet.data.target_registry import training_domains
from mapseg_nnunet.method.masking import MaskingSettings, masked_mse, mean_intensity_baseline
from mapseg_nnunet.planning.presets import GLC_UNET_CLASS_NAME
from mapseg_nnunet.trainers.base import nnUNetTrainerMAPSegBase
from mapseg_nnunet.training.reconstruction_png import save_reconstruction_png
from mapseg_nnunet.training.schedules import ConstantThenCosineLR
from mapseg_nnunet.training.variants import MAE_DEMO, MAE_SMOKE


class nnUNetTrainerMAPSegMAE(nnUNetTrainerMAPSegBase):
    def set_defaults(self) -> None:
        super().set_defaults()
        if self.intensity_settings is None and \
                self.configuration_manager.network_arch_class_name != GLC_UNET_CLASS_NAME:
            raise RuntimeError(
                f"Plans {self.plans_manager.plans_name}: the paper network's MAE decoder reconstructs intensities "
                f"in [0, 1] (sigmoid) and needs MAPSeg's intensity convention: plan with mapseg_plan_and_preprocess "
                f"-pl MAPSegPlanner (or MAPSegPlannerCPU). U-Net plans (MAPSegResEncPlanner, stock nnU-Net plans) "
                f"pretrain on nnU-Net's normalised data.")
        # paper Suppl. Tab. 2: 300 epochs x 500 iterations at batch 4 = 150k iterations
        self.mae_batch_size = 4
        self.num_iterations_per_epoch = 250
        self.num_epochs = 600
        self.num_val_iterations_per_epoch = 10
        self.initial_lr, self.weight_decay, self.betas, self.min_lr = 2e-4, 0.05, (0.9, 0.95), 1e-6
        self.masking = MaskingSettings()
        self.augmentation = GlobalLocalAugmentation()  # affine p 0.35, scale 0.75-1.5, +-40 deg, flips
        self.domain_roles = ("target", "pool")
        self.best_skill_ema = None
        self._loader_wait = 0.0
        self._step_time = 0.0
        self._last_step_end = None

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision=True):
        """MAPSegNet plans: the MAPSeg encoder with the light MAE decoder (only ``encoder.*`` transfers). GLC U-Net
        plans: the same GLC U-Net with one output per input channel, so every key but the head transfers."""
        if configuration_manager.network_arch_class_name == GLC_UNET_CLASS_NAME:
            return nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                            num_input_channels, enable_deep_supervision=False)
        return MAPSegMAENet.from_segmentation_kwargs(num_input_channels,
                                                     configuration_manager.network_arch_init_kwargs,
                                                     configuration_manager.configuration["mapseg"]["mae_channels"])

    def initialize(self):
        super().initialize()
        self.batch_size = self.mae_batch_size  # the plans' batch size is the segmentation trainers'

    def make_lr_scheduler(self, optimizer):
        return ConstantThenCosineLR(optimizer, self.initial_lr, self.num_epochs * self.num_iterations_per_epoch,
                                    self.num_iterations_per_epoch, self.min_lr)

    def get_dataloaders(self):
        domains = training_domains(self.plans_manager.dataset_name, self.plans_manager.plans_name,
                                   self.configuration_name, self.configuration_manager.data_identifier,
                                   self.domain_roles)
        self.print_to_log_file("MAE domains (sampled uniformly): " + ", ".join(
            f"{name} ({len(ds.identifiers)} cases)" for name, ds in domains))
        patch = self.configuration_manager.patch_size
        in_box = self.oversample_foreground_percent
        train = GlobalLocalDataLoader(domains, self.batch_size, patch, self.intensity_settings, self.augmentation,
                                      with_labels=False, box_probability=in_box)
        val = GlobalLocalDataLoader(domains, self.batch_size, patch, self.intensity_settings, NO_AUGMENTATION,
                                    with_labels=False, training=False, box_probability=in_box)
        return wrap_in_augmenter(train, val, self.device, seed=self.seed)

    def reconstruction_losses(self, batch: dict, generator=None, with_baseline: bool = False):
        """(loss = local + global masked-voxel MSE, {scale: (masked MSE, mean-intensity baseline MSE or None)},
        views). The baseline is computed for validation only, never in the training step."""
        x = batch["data"].to(self.device, non_blocking=True)
        g = batch["global"].to(self.device, non_blocking=True)
        (x_masked, x_mask), (g_masked, g_mask) = self.masking.mask(x, g, generator)
        reconstruction = self.network(torch.cat([x_masked, g_masked]))  # one pass: both scales, shared weights
        rec_x, rec_g = reconstruction[:x.shape[0]], reconstruction[x.shape[0]:]
        scales = {}
        for name, rec, target, mask in (("local", rec_x, x, x_mask), ("global", rec_g, g, g_mask)):
            baseline = masked_mse(mean_intensity_baseline(target, mask), target, mask) if with_baseline else None
            scales[name] = (masked_mse(rec, target, mask), baseline)
        views = {"local": (x_masked, rec_x, x), "global": (g_masked, rec_g, g)}
        return scales["local"][0] + scales["global"][0], scales, views

    def train_step(self, batch: dict) -> dict:
        start = perf_counter()
        if self._last_step_end is not None:
            self._loader_wait += start - self._last_step_end
        loss, _, _ = self.optimization_step(lambda: self.reconstruction_losses(batch))
        self.lr_scheduler.step_iteration()
        self._last_step_end = perf_counter()
        self._step_time += self._last_step_end - start
        return {"loss": loss.detach().cpu().numpy()}

    def on_train_epoch_start(self):
        self._loader_wait, self._step_time, self._last_step_end = 0.0, 0.0, None
        super().on_train_epoch_start()

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        n = max(1, self.num_iterations_per_epoch)
        total = self._loader_wait + self._step_time
        self.print_to_log_file(f"iteration time {self._step_time / n:.3f} s, data-loader wait share "
                               f"{self._loader_wait / total if total else 0:.1%}")

    def validation_step(self, batch: dict) -> dict:
        generator = torch.Generator(device=self.device).manual_seed(len(self._val_examples))
        loss, scales, views = self.reconstruction_losses(batch, generator, with_baseline=True)
        if not self._val_examples:
            self._val_examples.append({k: tuple(t[0].detach().cpu().numpy() for t in v) for k, v in views.items()})
        else:
            self._val_examples.append(None)
        out = {"loss": loss.detach().cpu().numpy()}
        for name, (mse, baseline) in scales.items():
            out[f"{name}_mse"], out[f"{name}_baseline"] = mse.detach().cpu().numpy(), baseline.detach().cpu().numpy()
        return out

    def on_validation_epoch_start(self):
        self._val_examples = []
        super().on_validation_epoch_start()

    def on_validation_epoch_end(self, val_outputs):
        outputs = collate_outputs(val_outputs)
        mean = {k: float(np.mean(v)) for k, v in outputs.items()}
        loss, baseline = mean["loss"], mean["local_baseline"] + mean["global_baseline"]
        skill = 1 - loss / baseline if baseline > 0 else 0.0
        # nnU-Net's logger has fixed keys: its pseudo-Dice curve (and EMA) carries the reconstruction skill
        self.logger.log("mean_fg_dice", skill, self.current_epoch)
        self.logger.log("dice_per_class_or_region", [skill], self.current_epoch)
        self.logger.log("val_losses", loss, self.current_epoch)
        per_scale = ", ".join(f"{name} {mean[name + '_mse']:.5f} vs {mean[name + '_baseline']:.5f}"
                              for name in ("local", "global"))
        self.print_to_log_file(f"masked-voxel MSE {loss:.5f} (mean-intensity baseline {baseline:.5f}, "
                               f"reconstruction skill {skill:.3f}; {per_scale})")
        if self.local_rank == 0 and self._val_examples:
            save_reconstruction_png(self._val_examples[0], join(self.output_folder, "mae_reconstructions",
                                                                f"epoch_{self.current_epoch:04d}.png"))

    def log_epoch_summary(self) -> None:
        self.print_to_log_file(f"train masked-voxel MSE {self.logger.get_value('train_losses', step=-1):.5f}, "
                               f"epoch time {self.epoch_seconds():.1f} s")

    def is_new_best(self) -> bool:
        """The reconstruction skill's EMA (as nnU-Net's EMA pseudo Dice) improved."""
        ema = self.logger.get_value("ema_fg_dice", step=-1)
        if self.best_skill_ema is None or ema > self.best_skill_ema:
            self.best_skill_ema = ema
            self.print_to_log_file(f"New best reconstruction skill (EMA): {ema:.4f}")
            return True
        return False

    def update_checkpoint(self, checkpoint: dict) -> None:
        super().update_checkpoint(checkpoint)
        checkpoint["mapseg_mae"] = {"best_skill_ema": self.best_skill_ema}

    def restore_from_checkpoint(self, checkpoint: dict) -> None:
        super().restore_from_checkpoint(checkpoint)
        self.best_skill_ema = checkpoint.get("mapseg_mae", {}).get("best_skill_ema")

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("MAE pretraining: no segmentation to validate. This checkpoint's encoder initialises "
                               "nnUNetTrainerMAPSegUDA / TTA through nnUNetv2_train ... -pretrained_weights "
                               f"{join(self.output_folder, 'checkpoint_final.pth')} (every key but the segmentation head transfers).")


class nnUNetTrainerMAPSegMAE_smoke(nnUNetTrainerMAPSegMAE):
    """2 epochs of 4 iterations: tests."""
    trainer_settings = MAE_SMOKE


class nnUNetTrainerMAPSegMAE_demo(nnUNetTrainerMAPSegMAE):
    """CPU demo budget on the CPU presets: 3 epochs x 40 iterations at lr 1e-3 (the paper's 2e-4 is for its 150k
    iterations on GPUs; at 2e-4 the demo's reconstructions did not beat the mean-intensity baseline)."""
    trainer_settings = MAE_DEMO
