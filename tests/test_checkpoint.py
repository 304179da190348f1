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
    trainer.save_checkpoint(path)

    real_save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
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
