"""Class-share alignment of the teacher's pseudo-labels against direct formulas, and its effect on a teacher that
under-predicts a minority class."""
import numpy as np
import pytest
import torch

from mapseg_nnunet.method.class_shares import (aligned_labels, class_ratios, foreground_shares, label_class_shares,
                                               label_shares)
from mapseg_nnunet.method.losses import MAPSegLossWeights, PseudoLabelSettings, target_loss
from mapseg_nnunet.method.masking import MaskingSettings


class _Dataset:
    def __init__(self, segs):
        self.segs, self.read = segs, []

    def load_case(self, key):
        self.read.append(key)
        return None, self.segs[key], None, {}


def test_source_shares_count_labeled_voxels_of_evenly_spaced_cases():
    rng = np.random.default_rng(0)
    segs = {f"c{i}": rng.integers(-1, 4, (1, 6, 7, 8)) for i in range(10)}
    keys = sorted(segs)
    shares = label_class_shares(_Dataset(segs), keys, 4)
    counts = sum(np.array([(segs[k] == c).sum() for c in (1, 2, 3)]) for k in keys)
    np.testing.assert_allclose(shares.numpy(), counts / counts.sum(), rtol=1e-6)
    dataset = _Dataset(segs)
    label_class_shares(dataset, keys, 4, max_cases=4)
    assert dataset.read == ["c0", "c3", "c6", "c9"]  # first and last included, evenly spaced
    with pytest.raises(ValueError, match="no foreground voxel"):
        label_class_shares(_Dataset({"a": np.zeros((1, 2, 2, 2))}), ["a"], 4)


def test_aligned_labels_are_the_argmax_of_reweighted_probabilities():
    torch.manual_seed(0)
    logits, reference = torch.randn(2, 4, 5, 6, 7), torch.randn(2, 4, 3, 3, 3)
    source = torch.tensor([0.2, 0.5, 0.3])
    ratios = class_ratios(source, reference, max_ratio=4.0)
    probs = reference.softmax(1)[:, 1:].flatten(2).sum(2)
    teacher = probs / probs.sum(1, keepdim=True)
    torch.testing.assert_close(foreground_shares(reference.softmax(1)), teacher)
    torch.testing.assert_close(ratios[:, 1:], (source / teacher).clamp(0.25, 4.0))
    assert torch.all(ratios[:, 0] == 1)
    expected = (logits.softmax(1) * ratios.view(2, 4, 1, 1, 1)).argmax(1, keepdim=True)
    assert torch.equal(aligned_labels(logits, ratios), expected)
    assert torch.equal(aligned_labels(logits, None), logits.argmax(1, keepdim=True))
    # the clamp: a class the teacher never predicts is raised by at most max_ratio
    never = torch.zeros(1, 4, 2, 2, 2)
    never[:, 1] = -30
    assert class_ratios(source, never, max_ratio=3.0)[0, 1] == pytest.approx(3.0)


def test_alignment_restores_a_minority_class_the_teacher_under_predicts():
    """True map: class 1 (CSF-like) on 20 % of the foreground, 2 and 3 on 40 % each. The teacher gives the class-1
    voxels p = (0.05, 0.40, 0.45, 0.10): its argmax never says 1. Aligned to the source's shares it says 1 there
    again, and leaves the confidently labeled voxels alone."""
    truth = torch.tensor([1] * 20 + [2] * 40 + [3] * 40)
    probs = torch.zeros(1, 4, 100)
    probs[0, :, truth == 1] = torch.tensor([0.05, 0.40, 0.45, 0.10])[:, None]
    probs[0, :, truth == 2] = torch.tensor([0.02, 0.03, 0.90, 0.05])[:, None]
    probs[0, :, truth == 3] = torch.tensor([0.02, 0.03, 0.05, 0.90])[:, None]
    logits = probs.log().view(1, 4, 100, 1, 1)
    plain = aligned_labels(logits, None).flatten()
    assert (plain == 1).sum() == 0
    source = torch.tensor([0.2, 0.4, 0.4])
    aligned = aligned_labels(logits, class_ratios(source, logits, max_ratio=4.0)).flatten()
    assert torch.equal(aligned, truth)
    assert label_shares(aligned.view(1, 1, -1), 4).tolist() == pytest.approx([0.2, 0.4, 0.4])


def test_target_loss_aligns_when_asked_and_reports_pseudo_label_shares():
    torch.manual_seed(0)

    class Net(torch.nn.Module):  # the teacher: class 2 everywhere but faintly class 1
        def forward(self, x, g=None, boxes=None, **_):
            base = torch.tensor([0.0, 1.0, 2.0, -4.0]).view(1, 4, 1, 1, 1)
            logits = base + 0.01 * x
            return {"logits": logits, "aux_logits": base + 0.01 * g, "local_features": x.repeat(1, 2, 1, 1, 1),
                    "global_crop": g.repeat(1, 2, 1, 1, 1)}

    net = Net()
    batch = {"data": torch.rand(2, 1, 8, 8, 8), "global": torch.rand(2, 1, 8, 8, 8),
             "box": torch.zeros(2, 3, 2, dtype=torch.long)}
    loss = lambda logits, y: torch.nn.functional.cross_entropy(logits, y[:, 0])  # noqa: E731
    args = (net, net, loss, batch, MAPSegLossWeights(), MaskingSettings(ratio=0.0))
    _, plain = target_loss(*args)
    assert plain["pseudo_label_shares"] == pytest.approx([0.0, 1.0, 0.0])
    aligned_settings = PseudoLabelSettings(alignment="source_shares", max_ratio=4.0)
    _, aligned = target_loss(*args, pseudo_labeling=aligned_settings, source_shares=torch.tensor([0.6, 0.3, 0.1]))
    # teacher shares ~ (0.27, 0.73, 0.005): class 1 x 2.2 overtakes class 2 x 0.41 everywhere
    assert aligned["pseudo_label_shares"] == pytest.approx([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="source's class shares"):
        target_loss(*args, pseudo_labeling=aligned_settings)
    for bad in (PseudoLabelSettings(alignment="prior"), PseudoLabelSettings(alignment="source_shares",
                                                                            max_ratio=0.5)):
        with pytest.raises(ValueError, match="pseudo_labeling"):
            bad.check()


def test_target_sites_refuse_alignment_without_labeled_source():
    """Test-time UDA and federated clients adapt on a target site alone: no source shares to align to."""
    from types import SimpleNamespace
    from mapseg_nnunet.trainers.uda import nnUNetTrainerMAPSegUDA
    site = SimpleNamespace(pseudo_labeling=PseudoLabelSettings(alignment="source_shares"))
    with pytest.raises(ValueError, match="needs the labeled source"):
        nnUNetTrainerMAPSegUDA.target_site_dataloaders(site)


def test_a_class_far_below_its_source_share_is_named_in_a_warning():
    """The T2w demo's case: CSF at 2.4 % of the pseudo-labels against 16 % of the source labels."""
    from mapseg_nnunet.method.class_shares import VANISHING_FACTOR, vanishing_classes_warning
    names = {1: "CSF", 2: "GM", 3: "WM"}
    warning = vanishing_classes_warning([0.024, 0.615, 0.361], [0.163, 0.538, 0.299], names)
    assert "CSF (label 1) 2.4 %" in warning and "16.3 %" in warning and "GM" not in warning
    assert vanishing_classes_warning([0.15, 0.55, 0.30], [0.163, 0.538, 0.299], names) is None
    at_limit = 0.163 / VANISHING_FACTOR  # the threshold is strict: a share exactly at it is not reported
    assert vanishing_classes_warning([at_limit, 0.6, 0.36], [0.163, 0.538, 0.299], names) is None
    both = vanishing_classes_warning([0.01, 0.98, 0.01], [0.163, 0.538, 0.299], names)
    assert "CSF (label 1)" in both and "WM (label 3)" in both
