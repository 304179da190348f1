"""nnUNetTrainerMAPSegTTA: test-time (source-free) UDA, stage 2 at the target site (paper Sec. 3.6, Table 3).

Trained on the target dataset itself (``nnUNetv2_train TARGET ...``) after ``mapseg_receive_source_model`` gave
it the stage-1 source model (see ``mapseg_nnunet.training.source_model``). Student and EMA teacher start from the
whole stage-1 network; every iteration is Eq. 10 on a target batch (masked and unmasked student views against the
teacher's pseudo-labels, GLC terms), then the EMA update (Eq. 3). No labels exist: validation measures, on the
held-out target cases of the fold, L_MPL and the student's agreement with the teacher (logged by nnU-Net as the
pseudo Dice); Score = -L_MPL drives ``checkpoint_best.pth`` and early stopping."""

from mapseg_nnunet.architectures.unwrap import unwrap_network
from mapseg_nnunet.method.losses import masked_pseudo_label_check
from mapseg_nnunet.method.selection import mean_over_ranks
from mapseg_nnunet.method.teacher import make_teacher
from mapseg_nnunet.trainers.uda import nnUNetTrainerMAPSegUDA, validation_output
from mapseg_nnunet.training.source_model import load_source_weights, source_model_entry
from mapseg_nnunet.training.variants import TTA_DEMO, TTA_SMOKE


class nnUNetTrainerMAPSegTTA(nnUNetTrainerMAPSegUDA):
    def set_defaults(self) -> None:
        super().set_defaults()
        self.source_model = source_model_entry(self.plans_manager.plans)  # fails early, saying what to run
        self.warmup_iterations = 0  # the warm-up happened at the source site (stage 1)

    def get_dataloaders(self):
        return self.target_site_dataloaders()

    def on_train_start(self):
        super().on_train_start()
        if self.teacher is None:  # a fresh start (--c restores student and teacher from the checkpoint)
            meta = load_source_weights(unwrap_network(self.network), self.source_model)
            self.teacher = make_teacher(self.network)
            self.print_to_log_file(
                f"Stage-1 source model loaded into student and teacher (segmentation head included): "
                f"{self.source_model['checkpoint']} ({meta['trainer_name']}, source "
                f"{self.source_model['source_dataset']}, {meta['current_epoch']} epochs); this replaces any "
                f"-pretrained_weights")

    def train_step(self, batch: dict) -> dict:
        return self.self_supervised_step(batch)  # Eq. 10

    def validation_step(self, batch: dict) -> dict:
        mpl, logits, pseudo_label = masked_pseudo_label_check(self.network, self.teacher, self._seg_loss,
                                                              self.batch_to_device(batch), self.loss_weights,
                                                              self.masking, self.outside_box_is_background)
        return validation_output(mpl, logits, pseudo_label)

    def selection_record(self) -> dict:
        mpl = float(self.logger.get_value("val_losses", step=-1))
        return {"agreement_dice": float(self.logger.get_value("mean_fg_dice", step=-1)), "val_mpl": mpl,
                "train_mpl": mean_over_ranks(self._epoch_mpl), "score": -mpl}

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("The target dataset has no labels: no final validation metrics. Predict with "
                               "nnUNetv2_predict and evaluate where test labels exist.")


class nnUNetTrainerMAPSegTTA_smoke(nnUNetTrainerMAPSegTTA):
    """2 epochs of 4 iterations, 2 validation iterations: tests."""
    trainer_settings = TTA_SMOKE


class nnUNetTrainerMAPSegTTA_demo(nnUNetTrainerMAPSegTTA):
    """CPU demo budget on the CPU presets: 4 epochs x 40 iterations at learning rate 1e-3 (as the UDA demo)."""
    trainer_settings = TTA_DEMO
