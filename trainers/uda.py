"""nnUNetTrainerMAPSegUDA: centralized MAPSeg UDA (paper Eq. 8) on the source and its registered targets.

Warm-up (``warmup_iterations``) on the labeled source with Eq. 9; then the EMA teacher is copied from the student
and every iteration adds the target terms on a target batch (masked pseudo-labeling + GLC). Selection: Score =
source validation Dice - 0.5 x epoch-mean L_MPL drives ``checkpoint_best.pth`` and early stopping. Without
registered targets (or on plans that have none) it trains the source terms only and says so.

Beyond the paper, each off by default: intensity augmentation of the source views (``source_intensity``: nnU-Net's
intensity transforms and contrast randomization, :mod:`mapseg_nnunet.data.intensity_augmentation`), of the target
student's views (``target_student_intensity``; the teacher always sees the clean views), confidence-weighted
pseudo-labels (``pseudo_labeling.weighting = "confidence"``) and pseudo-labels aligned to the source's class shares
(``pseudo_labeling.alignment = "source_shares"``, counted from the source training labels when the loaders are
built). Every adapting epoch logs the pseudo-labels' foreground class shares and warns when one class falls far
below its share of the source labels (:func:`~mapseg_nnunet.method.class_shares.vanishing_classes_warning`)."""
import torch
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn

from mapseg_nnunet.architectures.unwrap import unwrap_network
from mapseg_nnunet.data.augmenter import wrap_in_augmenter
from mapseg_nnunet.data.foreground_box import logits_outside_box_to_background_
from mapseg_nnunet.data.global_local import GlobalLocalDataLoader, SourceTargetLoader, single_dataset_loaders
from mapseg_nnunet.data.intensity_augmentation import IntensityAugmentation
from mapseg_nnunet.data.sample_geometry import NO_AUGMENTATION, GlobalLocalAugmentation
from mapseg_nnunet.data.target_registry import training_domains
from mapseg_nnunet.method.class_shares import label_class_shares, vanishing_classes_warning
from mapseg_nnunet.method.losses import MAPSegLossWeights, PseudoLabelSettings, source_loss, target_loss
from mapseg_nnunet.method.masking import MaskingSettings
from mapseg_nnunet.method.selection import mean_over_ranks, replaces_best, selection_score
from mapseg_nnunet.method.teacher import ema_alpha, ema_update, make_teacher
from mapseg_nnunet.trainers.base import nnUNetTrainerMAPSegBase
from mapseg_nnunet.training.schedules import CosineWarmRestartsLR, never_adapts_warning, sigmoid_rampup
from mapseg_nnunet.training.variants import CONTRAST_RANDOMIZATION, UDA_DEMO, UDA_DEMO_FITTED_TEACHER, UDA_SMOKE


def validation_output(loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> dict:
    """nnU-Net's validation-step record: loss and hard foreground tp / fp / fn of ``logits`` against ``target``."""
    prediction = torch.zeros_like(logits).scatter_(1, logits.argmax(1, keepdim=True), 1)
    tp, fp, fn, _ = get_tp_fp_fn_tn(prediction, target, axes=[0, 2, 3, 4])
    return {"loss": loss.detach().cpu().numpy(), "tp_hard": tp[1:].detach().cpu().numpy(),
            "fp_hard": fp[1:].detach().cpu().numpy(), "fn_hard": fn[1:].detach().cpu().numpy()}


class nnUNetTrainerMAPSegUDA(nnUNetTrainerMAPSegBase):
    def set_defaults(self) -> None:
        super().set_defaults()
        # paper Suppl. Tab. 3: 100 epochs x 100 iterations = 10k iterations, warm-up 1,000, patience 50 epochs
        self.num_iterations_per_epoch = 250
        self.num_epochs = 40
        self.warmup_iterations = 1000
        self.patience_epochs = 20
        self.loss_weights = MAPSegLossWeights()
        self.masking = MaskingSettings()
        self.pseudo_labeling = PseudoLabelSettings()
        self.source_intensity = IntensityAugmentation()
        self.target_student_intensity = IntensityAugmentation()
        self.ema_schedule = "large"  # 'small' when the MAE saw only dozens of scans
        self.target_rampup_iterations = 0  # > 0: the target terms' weight ramps up (mean teacher) after the hand-over
        self.teacher_dropout = False  # the reference leaves dropout on; we use the deterministic teacher
        self.predict_with = "student"  # which network nnUNetv2_predict uses (reference: student)
        self.inference_allowed_mirroring_axes = None  # trained without flips: no test-time mirroring by default
        self.source_augmentation = GlobalLocalAugmentation(scale_range=(0.7, 1.4), rotation_degrees=30,
                                                           flip_probability=0)
        self.target_augmentation = GlobalLocalAugmentation(scale_range=(0.7, 1.3), rotation_degrees=30,
                                                           flip_probability=0)
        self.teacher = None
        self.source_class_shares = None  # counted from the source labels when there are targets
        self.iteration = 0
        self.teacher_steps = 0
        self.score_history, self.best_record, self.epochs_without_improvement = [], None, 0
        self.reset_epoch_records()

    # ---- data
    def get_dataloaders(self):
        tr_keys, val_keys = self.do_split()
        source, plans, config = self.plans_manager.dataset_name, self.plans_manager.plans_name, \
            self.configuration_name
        data_id = self.configuration_manager.data_identifier
        source_tr = training_domains(source, plans, config, data_id, (), tr_keys)
        source_val = training_domains(source, plans, config, data_id, (), val_keys)
        targets = training_domains(source, plans, config, data_id, ("target",))[1:] \
            if self.loss_weights.use_mpl else []
        if not self.loss_weights.use_mpl:
            self.print_to_log_file("Source terms only (use_mpl off): target datasets are not loaded")
        elif targets:
            self.print_to_log_file("UDA targets (sampled uniformly): " + ", ".join(
                f"{name} ({len(ds.identifiers)} cases)" for name, ds in targets))
        else:
            self.print_to_log_file(f"WARNING: no target dataset is registered to {source} for plans {plans}; "
                                   f"training the source terms only (register targets with "
                                   f"mapseg_register_targets -s {source} -t ... -p {plans}).")
        patch, intensity = self.configuration_manager.patch_size, self.intensity_settings
        self.pseudo_labeling.check()
        if targets:  # the prior of the alignment and the reference of each epoch's pseudo-label shares
            self.source_class_shares = label_class_shares(source_tr[0][1], tr_keys,
                                                          self.label_manager.num_segmentation_heads)
            self.print_to_log_file("Source labels' foreground class shares: "
                                   + ", ".join(f"{s:.3f}" for s in self.source_class_shares.tolist())
                                   + ("; pseudo-labels are aligned to them"
                                      if self.pseudo_labeling.alignment == "source_shares" else ""))
        in_box = self.oversample_foreground_percent
        train = SourceTargetLoader(
            GlobalLocalDataLoader(source_tr, self.batch_size, patch, intensity, self.source_augmentation,
                                  with_labels=True, intensity_augmentation=self.source_intensity,
                                  box_probability=in_box),
            GlobalLocalDataLoader(targets, self.batch_size, patch, intensity, self.target_augmentation,
                                  with_labels=False, student_intensity_augmentation=self.target_student_intensity,
                                  box_probability=in_box)
            if targets else None)
        val = GlobalLocalDataLoader(source_val, self.batch_size, patch, intensity, NO_AUGMENTATION,
                                    with_labels=True, training=False, box_probability=in_box)
        return wrap_in_augmenter(train, val, self.device, seed=self.seed)

    def target_site_dataloaders(self):
        """Loaders of this trainer's own dataset as an unlabeled target (test-time UDA, federated clients)."""
        self.pseudo_labeling.check()
        if self.pseudo_labeling.alignment != "none":
            raise ValueError(f"{type(self).__name__}: pseudo_labeling.alignment = "
                             f"{self.pseudo_labeling.alignment!r} needs the labeled source; a target site has none "
                             f"(use it with centralized UDA, nnUNetTrainerMAPSegUDA)")
        tr_keys, val_keys = self.do_split()
        return wrap_in_augmenter(*single_dataset_loaders(
            self.plans_manager.dataset_name, self.preprocessed_dataset_folder, self.dataset_class, tr_keys, val_keys,
            self.batch_size, self.configuration_manager.patch_size, self.intensity_settings,
            self.target_augmentation, student_intensity_augmentation=self.target_student_intensity,
            box_probability=self.oversample_foreground_percent), self.device, seed=self.seed)

    def batch_to_device(self, batch):
        """The tensors of a loader batch on the trainer's device, labels as long (nnU-Net's -1 as background)."""
        out = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        for key in ("target", "global_target"):
            if key in out:
                out[key] = out[key].clamp_min(0).long()  # nnU-Net's -1 (outside the non-zero mask) = background
        return out

    # ---- training
    def make_lr_scheduler(self, optimizer):
        return CosineWarmRestartsLR(optimizer, self.initial_lr, self.num_iterations_per_epoch)

    def _seg_loss(self, logits, target):
        return self.loss(logits, target)

    def train_step(self, batch: dict) -> dict:
        adapt = batch["target"] is not None and self.loss_weights.use_mpl and \
            self.iteration >= self.warmup_iterations
        if adapt and self.teacher is None:
            self.teacher = make_teacher(self.network)
            self.print_to_log_file(
                f"Iteration {self.iteration}: warm-up done, EMA teacher initialised from the student" +
                (f"; target terms ramped up over {self.target_rampup_iterations} iterations"
                 if self.target_rampup_iterations > 0 else "") +
                ("" if self.loss_weights.source_unmasked_after_warmup else "; source terms on the masked view only"))

        def compute_loss():
            loss, _ = source_loss(self.network, self._seg_loss, self.batch_to_device(batch["source"]),
                                  self.loss_weights, self.masking,
                                  unmasked=not adapt or self.loss_weights.source_unmasked_after_warmup)
            if adapt:
                self.teacher.train(self.teacher_dropout)
                t_loss, t_parts = target_loss(self.network, self.teacher, self._seg_loss,
                                              self.batch_to_device(batch["target"]), self.loss_weights, self.masking,
                                              pseudo_labeling=self.pseudo_labeling,
                                              source_shares=self.source_class_shares,
                                              outside_box_is_background=self.outside_box_is_background)
                loss = loss + sigmoid_rampup(self.teacher_steps, self.target_rampup_iterations) * t_loss
                self._record_pseudo_labels(t_parts)
            return (loss,)

        return self.teacher_student_step(compute_loss, update_teacher=adapt)

    def self_supervised_step(self, batch: dict) -> dict:
        """One step of Eq. 10 on an unlabeled target batch (test-time UDA, federated clients)."""
        def compute_loss():
            loss, parts = target_loss(self.network, self.teacher, self._seg_loss, self.batch_to_device(batch),
                                      self.loss_weights, self.masking, self_supervised=True,
                                      pseudo_labeling=self.pseudo_labeling,
                                      outside_box_is_background=self.outside_box_is_background)
            self._record_pseudo_labels(parts)
            return (loss,)

        return self.teacher_student_step(compute_loss, update_teacher=True)

    def reset_epoch_records(self) -> None:
        self._epoch_mpl, self._epoch_pl_weight, self._epoch_pl_shares = [], [], []

    def _record_pseudo_labels(self, parts: dict) -> None:
        self._epoch_mpl.append(parts["mpl"])
        self._epoch_pl_weight.append(parts["pseudo_label_weight"])
        self._epoch_pl_shares.append(parts["pseudo_label_shares"])

    def teacher_student_step(self, compute_loss, update_teacher: bool) -> dict:
        """Optimiser step, per-iteration learning rate, then the EMA teacher update (Eq. 3)."""
        loss, = self.optimization_step(compute_loss, clip_norm=12)
        self.lr_scheduler.step_iteration()
        if update_teacher:
            ema_update(self.teacher, self.network, ema_alpha(self.teacher_steps, self.ema_schedule))
            self.teacher_steps += 1
        self.iteration += 1
        return {"loss": loss.detach().cpu().numpy()}

    def on_train_start(self):
        super().on_train_start()
        warning = never_adapts_warning(self.warmup_iterations, self.num_epochs, self.num_iterations_per_epoch)
        if self.loss_weights.use_mpl and warning:
            self.print_to_log_file(warning)

    def on_train_end(self):
        if self.loss_weights.use_mpl:
            self.print_to_log_file(
                f"Adaptation: {self.teacher_steps} of {self.iteration} iterations trained the target terms"
                + (" (none: this run trained the source terms only)" if self.teacher_steps == 0 else ""))
        super().on_train_end()

    def on_train_epoch_start(self):
        self.reset_epoch_records()
        self.iteration = self.current_epoch * self.num_iterations_per_epoch
        super().on_train_epoch_start()

    # ---- validation and selection
    def validation_step(self, batch: dict) -> dict:
        batch = self.batch_to_device(batch)
        logits = self.network(batch["data"], batch["global"], batch["box"], with_aux=False)["logits"] \
            if self.loss_weights.use_glc else self.network(batch["data"])
        if self.outside_box_is_background:  # as nnUNetv2_predict labels the case
            logits = logits_outside_box_to_background_(logits, batch["voxels_in_box"],
                                                       self.label_manager.has_regions)
        return validation_output(self.loss(logits, batch["target"]), logits, batch["target"])

    def on_validation_epoch_end(self, val_outputs):
        super().on_validation_epoch_end(val_outputs)
        record = {"epoch": self.current_epoch, "adapted": bool(self._epoch_mpl), **self.selection_record(),
                  "alpha": ema_alpha(self.teacher_steps, self.ema_schedule) if self.teacher is not None else None,
                  "pseudo_label_weight": mean_over_ranks(self._epoch_pl_weight) if self._epoch_pl_weight else None,
                  "pseudo_label_shares": [mean_over_ranks([s[c] for s in self._epoch_pl_shares])
                                          for c in range(len(self._epoch_pl_shares[0]))]
                  if self._epoch_pl_shares else None}
        self.score_history.append(record)
        self.print_to_log_file(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in record.items() if k != "epoch"))
        if record["pseudo_label_shares"] and self.source_class_shares is not None:
            warning = vanishing_classes_warning(record["pseudo_label_shares"], self.source_class_shares.tolist(),
                                                {v: k for k, v in self.dataset_json["labels"].items()
                                                 if isinstance(v, int)})  # regions keep their numbers
            if warning:
                self.print_to_log_file(warning)

    def selection_record(self) -> dict:
        """Label-free Score of this epoch (paper Sec. 3.7) and what it is made of."""
        dice = float(self.logger.get_value("mean_fg_dice", step=-1))
        mpl = mean_over_ranks(self._epoch_mpl)  # 0 during warm-up (reference)
        return {"source_dice": dice, "mpl": mpl, "score": selection_score(dice, mpl)}

    def is_new_best(self) -> bool:
        record = self.score_history[-1]
        if replaces_best(record, self.best_record):
            if self.best_record is not None and record["adapted"] and not self.best_record["adapted"]:
                self.print_to_log_file("First epoch with target terms: warm-up epochs no longer compete (their "
                                       "L_MPL is 0 by construction)")
            self.best_record, self.epochs_without_improvement = record, 0
            self.print_to_log_file(f"New best Score: {record['score']:.4f}")
            return True
        self.epochs_without_improvement += 1
        return False

    def should_stop_early(self) -> bool:
        if self.epochs_without_improvement > self.patience_epochs:
            self.print_to_log_file(f"Early stop: Score did not improve for {self.patience_epochs} epochs")
            return True
        return False

    # ---- checkpoints: network_weights = the predicting network; teacher, EMA step and Score history kept
    def update_checkpoint(self, checkpoint: dict) -> None:
        super().update_checkpoint(checkpoint)
        student = checkpoint["network_weights"]
        teacher = self.teacher.state_dict() if self.teacher is not None else None
        if self.predict_with == "teacher" and teacher is not None:
            checkpoint["network_weights"] = teacher
        checkpoint["mapseg"] = {"student_weights": student, "teacher_weights": teacher,
                                "predict_with": self.predict_with, "teacher_steps": self.teacher_steps,
                                "score_history": self.score_history, "best_record": self.best_record,
                                "epochs_without_improvement": self.epochs_without_improvement}

    def restore_from_checkpoint(self, checkpoint: dict) -> None:
        super().restore_from_checkpoint(checkpoint)
        extra = checkpoint.get("mapseg")
        if extra is None:
            return
        unwrap_network(self.network).load_state_dict(extra["student_weights"])
        if extra["teacher_weights"] is not None:
            self.teacher = make_teacher(self.network)
            self.teacher.load_state_dict(extra["teacher_weights"])
        self.teacher_steps = extra["teacher_steps"]
        self.score_history = extra["score_history"]
        self.best_record = extra["best_record"]
        self.epochs_without_improvement = extra["epochs_without_improvement"]


class nnUNetTrainerMAPSegUDA_noGLC(nnUNetTrainerMAPSegUDA):
    """Ablation (paper Table 5): no global view, no global terms; training and prediction on local patches."""
    trainer_settings = {"loss_weights.use_glc": False}


class nnUNetTrainerMAPSegUDA_noMPL(nnUNetTrainerMAPSegUDA):
    """Ablation (paper Table 5) and source-only baseline: the source terms of Eq. 9 (masking + GLC), no target
    terms, no teacher."""
    trainer_settings = {"loss_weights.use_mpl": False}


class nnUNetTrainerMAPSegUDA_smoke(nnUNetTrainerMAPSegUDA):
    trainer_settings = UDA_SMOKE


class nnUNetTrainerMAPSegUDA_noMPL_smoke(nnUNetTrainerMAPSegUDA_noMPL):
    trainer_settings = UDA_SMOKE


class nnUNetTrainerMAPSegUDA_demo(nnUNetTrainerMAPSegUDA):
    trainer_settings = UDA_DEMO


class nnUNetTrainerMAPSegUDA_noMPL_demo(nnUNetTrainerMAPSegUDA_noMPL):
    trainer_settings = UDA_DEMO


class nnUNetTrainerMAPSegUDA_contrastRandomized(nnUNetTrainerMAPSegUDA):
    """MAPSeg UDA with contrast randomization of the source views (warm-up and adaptation)."""
    trainer_settings = CONTRAST_RANDOMIZATION


class nnUNetTrainerMAPSegUDA_contrastRandomized_noMPL(nnUNetTrainerMAPSegUDA_contrastRandomized):
    """Its source-only baseline: the source terms with contrast randomization, no target terms."""
    trainer_settings = {"loss_weights.use_mpl": False}


class nnUNetTrainerMAPSegUDA_contrastRandomized_demo(nnUNetTrainerMAPSegUDA_contrastRandomized):
    trainer_settings = UDA_DEMO_FITTED_TEACHER


class nnUNetTrainerMAPSegUDA_contrastRandomized_noMPL_demo(nnUNetTrainerMAPSegUDA_contrastRandomized_noMPL):
    """make demo's source-only baseline: as many source iterations as the UDA run trains (warm-up + adapting)."""
    trainer_settings = UDA_DEMO_FITTED_TEACHER
