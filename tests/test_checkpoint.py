"""Checkpoints are written then renamed: an interruption while saving keeps the previous checkpoint."""
import json
import os

import pytest
import torch


def test_interrupted_checkpoint_save_keeps_previous(planned_dataset, monkeypatch, tmp_path):
    root, env = planned_dataset
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    from mapseg_nnunet.trainers.uda import nnUNetTrainerMAPSegUDA
    folder = os.path.join(env["nnUNet_preprocessed"], "Dataset901_Synthetic")
    plans = json.load(open(os.path.join(folder, "MAPSegPlansCPU.json")))
    plans["continue_training"] = False
    trainer = nnUNetTrainerMAPSegUDA(plans, "3d_fullres", 0, json.load(open(os.path.join(folder, "dataset.json"))),
                                     torch.device("cpu"))
    trainer.initialize()
    path = str(tmp_path / "checkpoint_latest.pth")
    trainer.current_epoch = 3
    real_save, written = torch.save, []

    def recording_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            written.append(str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", recording_save)
    trainer.save_checkpoint(path)
    assert len(written) == 1  # one file written per save (nnU-Net's part goes through memory)
    assert "mapseg" in torch.load(path, map_location="cpu", weights_only=False)  # with the trainer's extras

    def interrupted_save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return real_save(obj, f, *args, **kwargs)
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    trainer.current_epoch = 7
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, map_location="cpu", weights_only=False)["current_epoch"] == 4
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]


RESUME_SCRIPT = r"""
import os, torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
from mapseg_nnunet.training.settings import seed_everything

def trainer(epochs, continue_training):
    seed_everything(0)  # the uninterrupted and the resumed run start from the same initialisation
    t = get_trainer_from_args('901', '3d_fullres', 1, 'nnUNetTrainerMAPSegUDA_smoke', 'MAPSegPlansCPU',
                              continue_training, device=torch.device('cpu'))
    maybe_load_checkpoint(t, continue_training, False, None)  # nnUNetv2_train --c
    t.num_epochs, t.keep_epoch_checkpoints = epochs, True
    return t

def load(name):
    return torch.load(os.path.join(straight.output_folder, name), map_location='cpu', weights_only=False)

straight = trainer(4, False)  # epoch 0 warm-up, epochs 1-3 adapt (teacher from iteration 4)
straight.run_training()
reference, best = load('checkpoint_final.pth')['mapseg'], load('checkpoint_best.pth')
history = [h['score'] for h in reference['score_history']]
assert len(history) == 4 and reference['teacher_steps'] == 12, reference
assert [h['adapted'] for h in reference['score_history']] == [False, True, True, True]
best_epoch = max(range(1, 4), key=lambda e: (history[e], -e))  # first adapted epoch with the highest Score
assert best['current_epoch'] == best_epoch + 1 and best['mapseg']['best_record']['score'] == history[best_epoch], (
    history, best['current_epoch'])
assert reference['epochs_without_improvement'] == 3 - best_epoch

# a crash during epoch 3: only what was saved after epoch 2 is left (as checkpoint_latest with save_every 1)
interrupted = load('checkpoint_epoch_002.pth')
for name in os.listdir(straight.output_folder):
    if name.endswith('.pth'):
        os.remove(os.path.join(straight.output_folder, name))
torch.save(interrupted, os.path.join(straight.output_folder, 'checkpoint_latest.pth'))

resumed = trainer(4, True)
for name, value in resumed.teacher.state_dict().items():
    assert torch.equal(value, interrupted['mapseg']['teacher_weights'][name]), name
for name, value in resumed.network.state_dict().items():
    assert torch.equal(value, interrupted['mapseg']['student_weights'][name]), name
assert resumed.current_epoch == 3 and resumed.teacher_steps == 8
resumed.run_training()
after = load('checkpoint_final.pth')['mapseg']
assert after['teacher_steps'] == 12 and resumed.iteration == 16
# exact continuation (in-process loaders): the same masks, dropout, cases, patches and augmentation as without the
# interruption, hence the same student, teacher and Score history
for which in ('student_weights', 'teacher_weights'):
    for name, value in after[which].items():
        assert torch.equal(value, reference[which][name]), (which, name)
assert [h['score'] for h in after['score_history']] == history
assert 'Random states restored from the checkpoint' in open(resumed.log_file).read()

stopped = trainer(6, True)
stopped.patience_epochs, stopped.epochs_without_improvement = 0, 1
stopped.run_training()  # patience exhausted: no further epoch
assert len(stopped.score_history) == 4 and stopped.current_epoch == 4
log = open(stopped.log_file).read()
assert 'Early stop' in log
print('RESUMED')
"""


def test_resume_restores_teacher_ema_step_and_score_history(source_with_target):
    """nnUNetv2_train --c semantics: the final checkpoint restores student, teacher, EMA step, Score history and
    random states; training continues them exactly as an uninterrupted run; checkpoint_best follows Score; early
    stopping honours the patience."""
    from nnunet_fixtures import run
    root, env = source_with_target
    out = run(["python", "-c", RESUME_SCRIPT], env, cwd=root)
    assert "RESUMED" in out.stdout
