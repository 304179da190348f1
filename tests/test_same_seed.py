"""Same seed, same model: ``nnUNetv2_train`` with the trainer setting ``seed`` twice gives identical weights, with the
data loaded in two seeded background workers (``nnUNet_n_proc_DA=2``) and contrast randomization drawing its
random networks there; another seed gives another model. Centralized UDA, adapting from the second epoch."""
import os

import numpy as np
import torch

from mapseg_nnunet.data.augmenter import TRAIN_STREAM, VALIDATION_STREAM, worker_seeds
from nnunet_fixtures import run

PLANS = "MAPSegPlansCPU"
CONTRAST_RANDOMIZATION = ["source_intensity.nnunet=true", "source_intensity.gin_probability=0.5",
                          "source_intensity.remap_probability=0.5"]


def _train(root, env, seed: int, results: str) -> dict:
    variant = f"{PLANS}_seed{seed}"
    if not os.path.isfile(os.path.join(env["nnUNet_preprocessed"], "Dataset901_Synthetic", f"{variant}.json")):
        run(["mapseg_plans_variant", "-d", "901", "-p", PLANS, "-o", variant, "--set", f"seed={seed}",
             "final_validation=false", *CONTRAST_RANDOMIZATION], env, cwd=root)
    env = {**env, "nnUNet_results": results, "nnUNet_n_proc_DA": "2"}
    run(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", "nnUNetTrainerMAPSegUDA_smoke", "-p", variant, "-device",
         "cpu"], env, cwd=root)
    folder = os.path.join(results, "Dataset901_Synthetic", f"nnUNetTrainerMAPSegUDA_smoke__{variant}__3d_fullres",
                          "fold_0")
    checkpoint = torch.load(os.path.join(folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    return checkpoint["network_weights"]


def test_same_seed_same_model(source_with_target, tmp_path):
    root, env = source_with_target
    first, again, other = (_train(root, env, seed, str(tmp_path / name))
                           for seed, name in ((0, "first"), (0, "again"), (1, "other")))
    assert first.keys() == again.keys() == other.keys()
    floating = [k for k, v in first.items() if v.is_floating_point()]
    assert floating
    # bit-identical: every CPU operation on this path is deterministic for a fixed thread count and input
    different = [k for k in floating if not torch.equal(first[k], again[k])]
    assert not different, f"same seed, different weights: {different[:5]}"
    changed = [k for k in floating if not torch.allclose(first[k], other[k], rtol=1e-3, atol=1e-5)]
    assert len(changed) > len(floating) // 2, "another seed should train another model"


def test_worker_seeds_differ_between_workers_and_streams_not_between_runs():
    train, val = worker_seeds(0, TRAIN_STREAM, 4), worker_seeds(0, VALIDATION_STREAM, 4)
    assert train == worker_seeds(0, TRAIN_STREAM, 4)
    assert len(set(train + val)) == 8
    assert not set(train) & set(worker_seeds(1, TRAIN_STREAM, 4))


class _RandomLoader:
    """A loader drawing from NumPy's and PyTorch's global random state, as nnU-Net's loaders and transforms do."""

    def __init__(self):
        self.thread_id = 0

    def set_thread_id(self, thread_id):
        self.thread_id = thread_id

    def __iter__(self):
        return self

    def __next__(self):
        return {"numpy": np.random.rand(3), "torch": torch.rand(3).numpy(), "worker": self.thread_id}


def _batches(seed, n=6):
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
    from mapseg_nnunet.data.augmenter import seeded_nnunet_augmenters
    train, val = seeded_nnunet_augmenters(lambda: (SingleThreadedAugmenter(_RandomLoader(), None),
                                                   SingleThreadedAugmenter(_RandomLoader(), None)),
                                          torch.device("cpu"), seed)
    try:
        return [next(train) for _ in range(n)]
    finally:
        for augmenter in (train, val):
            getattr(augmenter, "_finish", lambda: None)()


def test_stock_loaders_in_seeded_workers(monkeypatch):
    """nnU-Net's own loaders (the stock trainer's) in two seeded workers: the same batches in the same order for
    one seed, in turn from both workers, NumPy and PyTorch drawn differently by each worker; another seed differs;
    nnUNet_n_proc_DA is left as it was."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "2")
    first, again, other = _batches(0), _batches(0), _batches(1)
    assert os.environ["nnUNet_n_proc_DA"] == "2"
    workers = [b["worker"] for b in first]
    assert set(workers) == {0, 1} and all(a != b for a, b in zip(workers, workers[1:]))  # in turn
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["numpy"], b["numpy"])
        np.testing.assert_array_equal(a["torch"], b["torch"])
    assert workers == [b["worker"] for b in again]
    assert not np.allclose(first[0]["numpy"], first[1]["numpy"])  # the workers' streams differ
    assert not np.allclose(first[0]["torch"], first[1]["torch"])
    assert not np.allclose(first[0]["numpy"], other[0]["numpy"])
