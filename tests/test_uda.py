"""MAPSeg UDA mechanics against direct formulas: loss terms (paper Eq. 2, 4-10), EMA (Eq. 3) and its schedules,
label-free Score, learning-rate schedules."""
import math

import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from mapseg_nnunet.architectures import MAPSegNet
from mapseg_nnunet.method.losses import channelwise_cosine_loss
from mapseg_nnunet.planning.presets import PRESETS
from mapseg_nnunet.training.schedules import ConstantThenCosineLR, CosineWarmRestartsLR, RoundCosineLR
from mapseg_nnunet.method.losses import MAPSegLossWeights, PseudoLabelSettings, source_loss, target_loss
from mapseg_nnunet.method.masking import MaskingSettings
from mapseg_nnunet.method.teacher import ema_alpha, ema_update, make_teacher
from mapseg_nnunet.method.selection import replaces_best, selection_score

P = 24


def seg_loss():
    return DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)


@pytest.fixture()
def setting():
    torch.manual_seed(0)
    net = MAPSegNet(1, 3, **{**PRESETS["cpu"].arch_kwargs(), "aspp_dilations": [1, 2, 3]}).eval()
    batch = {"data": torch.rand(2, 1, P, P, P), "global": torch.rand(2, 1, P, P, P),
             "box": torch.tensor([[[0, 12], [4, 20], [0, 24]], [[8, 24], [0, 24], [2, 14]]]),
             "target": torch.randint(0, 3, (2, 1, P, P, P)), "global_target": torch.randint(0, 3, (2, 1, P, P, P))}
    return net, batch


def test_source_loss_is_eq9(setting):
    net, b = setting
    w, loss = MAPSegLossWeights(), seg_loss()
    total, parts = source_loss(net, loss, b, w, MaskingSettings(ratio=0.0))  # masked == unmasked views
    out = net(b["data"], b["global"], b["box"])
    seg, aux = loss(out["logits"], b["target"]), loss(out["aux_logits"], b["global_target"])
    cos = channelwise_cosine_loss(out["local_features"], out["global_crop"])
    expected = 0.5 * (seg + seg) + 0.05 * (aux + aux) + 0.025 * (cos + cos)
    torch.testing.assert_close(total, expected)
    assert parts["source_seg_masked"] == pytest.approx(seg.item(), rel=1e-5)
    masked_total, _ = source_loss(net, loss, b, w, MaskingSettings(ratio=0.7))
    assert not torch.isclose(masked_total, total)
    # the reference's adaptation step: the masked view's terms only (half of the ratio-0 total above)
    only_masked, parts = source_loss(net, loss, b, w, MaskingSettings(ratio=0.0), unmasked=False)
    torch.testing.assert_close(only_masked, expected / 2)
    assert "source_seg_unmasked" not in parts and "source_seg_masked" in parts


def test_target_terms_ramp_up_after_the_hand_over():
    from mapseg_nnunet.training.schedules import sigmoid_rampup
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(50, 0) == 1.0  # the paper: full weight at once
    weights = [sigmoid_rampup(step, 100) for step in range(0, 121, 10)]
    assert weights[0] == pytest.approx(math.exp(-5)) and weights[5] == pytest.approx(math.exp(-1.25))
    assert all(a < b for a, b in zip(weights[:10], weights[1:11])) and weights[10:] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("self_supervised", [False, True])
def test_target_loss_centralized_and_eq10(setting, self_supervised):
    net, b = setting
    teacher = make_teacher(net)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    w, loss = MAPSegLossWeights(), seg_loss()
    total, parts = target_loss(net, teacher, loss, b, w, MaskingSettings(ratio=0.0), self_supervised)
    t_out = teacher(b["data"], b["global"], b["box"])
    pl, PL = t_out["logits"].argmax(1, keepdim=True), t_out["aux_logits"].argmax(1, keepdim=True)
    out = net(b["data"], b["global"], b["box"])
    seg, aux = loss(out["logits"], pl), loss(out["aux_logits"], PL)
    cos = channelwise_cosine_loss(out["local_features"], out["global_crop"])
    if self_supervised:  # Eq. 10
        expected = 0.5 * (seg + seg) + 0.05 * (aux + aux) + 0.025 * (cos + cos)
    else:  # target part of Eq. 2 + Eq. 6
        expected = seg + 2 * 0.05 * aux + 2 * 0.025 * cos
    torch.testing.assert_close(total, expected)
    assert parts["mpl"] == pytest.approx(seg.item(), rel=1e-5)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_confidence_weighted_pseudo_labels_and_student_views(setting):
    net, b = setting
    teacher = make_teacher(net)
    w, loss, masking = MAPSegLossWeights(), seg_loss(), MaskingSettings(ratio=0.0)
    t_out = teacher(b["data"], b["global"], b["box"])
    confidence = t_out["logits"].softmax(1).max(1).values
    threshold = float(confidence.flatten().quantile(0.3))  # 70 % of the local voxels are confident
    global_share = float((t_out["aux_logits"].softmax(1).max(1).values > threshold).float().mean())
    hard, hard_parts = target_loss(net, teacher, loss, b, w, masking)
    weighted, parts = target_loss(net, teacher, loss, b, w, masking,
                                  pseudo_labeling=PseudoLabelSettings("confidence", threshold))
    out = net(b["data"], b["global"], b["box"])
    pl, PL = t_out["logits"].argmax(1, keepdim=True), t_out["aux_logits"].argmax(1, keepdim=True)
    seg, aux = loss(out["logits"], pl), loss(out["aux_logits"], PL)
    cos = channelwise_cosine_loss(out["local_features"], out["global_crop"])
    share = float((confidence > threshold).float().mean())
    assert 0.6 < share < 0.8 and hard_parts["pseudo_label_weight"] == 1.0
    assert parts["pseudo_label_weight"] == pytest.approx(share)
    torch.testing.assert_close(weighted, share * seg + 2 * 0.05 * global_share * aux + 2 * 0.025 * cos)
    assert parts["mpl"] == pytest.approx(hard_parts["mpl"])  # the Score's L_MPL stays unweighted
    # augmented student views: the student sees them, the teacher's pseudo-labels come from the clean views
    student_views = {**b, "student_data": 1 - b["data"], "student_global": 1 - b["global"]}
    augmented, _ = target_loss(net, teacher, loss, student_views, w, masking)
    s_out = net(1 - b["data"], 1 - b["global"], b["box"])
    expected = loss(s_out["logits"], pl) + 2 * 0.05 * loss(s_out["aux_logits"], PL) + \
        2 * 0.025 * channelwise_cosine_loss(s_out["local_features"], s_out["global_crop"])
    torch.testing.assert_close(augmented, expected)
    for bad in (PseudoLabelSettings("soft"), PseudoLabelSettings("confidence", 1.0)):
        with pytest.raises(ValueError, match="pseudo_labeling"):
            bad.check()


def test_ablation_switches(setting):
    net, b = setting
    total, parts = source_loss(net, seg_loss(), b, MAPSegLossWeights(use_glc=False), MaskingSettings(ratio=0.0))
    assert set(parts) == {"source_seg_unmasked", "source_seg_masked"}
    torch.testing.assert_close(total, 0.5 * 2 * seg_loss()(net(b["data"]), b["target"]))


def test_ema_update_and_schedules():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    t0 = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.99)
    for t, t_old, s in zip(teacher.parameters(), t0, student.parameters()):
        torch.testing.assert_close(t, 0.99 * t_old + 0.01 * s)
    assert [ema_alpha(s, "large") for s in (0, 999, 1000, 50000)] == [0.999, 0.999, 0.9999, 0.9999]
    assert [ema_alpha(s, "small") for s in (0, 999, 1000, 2999, 3000)] == [0.99, 0.99, 0.999, 0.999, 0.9999]
    with pytest.raises(ValueError):
        ema_alpha(0, "medium")


def test_selection_score():
    assert selection_score(0.8, -0.6) == pytest.approx(1.1)  # nnU-Net's Dice+CE is CE - soft Dice: can be < 0
    assert selection_score(0.8, 0.2) == pytest.approx(0.7)


def test_selection_compares_adapted_epochs_only_once_adaptation_ran():
    warmup = [{"adapted": False, "score": 0.70}, {"adapted": False, "score": 0.75}]
    adapted = [{"adapted": True, "score": 0.40}, {"adapted": True, "score": 0.45}, {"adapted": True, "score": 0.42}]
    best = None
    chosen = []
    for record in warmup + adapted:
        if replaces_best(record, best):
            best = record
        chosen.append(best["score"])
    # the warm-up epoch with Score 0.75 leads until the first adapted epoch replaces it despite its lower Score
    assert chosen == [0.70, 0.75, 0.40, 0.45, 0.45]
    assert not replaces_best({"adapted": False, "score": 9.0}, {"adapted": True, "score": 0.1})
    assert replaces_best({"adapted": False, "score": 0.8}, {"adapted": False, "score": 0.7})  # source-only runs


def test_lr_schedules_in_iterations():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1)
    mae = ConstantThenCosineLR(opt, 2e-4, total_iterations=150_000, iterations_per_epoch=250)
    assert mae.lr_at(99_999) == 2e-4 and mae.lr_at(110_000) == pytest.approx(1e-6)
    assert mae.lr_at(120_000) == pytest.approx(2e-4) and mae.lr_at(150_000) == pytest.approx(1e-6)
    mae.step(epoch=440)
    assert opt.param_groups[0]["lr"] == pytest.approx(mae.lr_at(110_000))
    uda = CosineWarmRestartsLR(opt, 1e-4, iterations_per_epoch=250)
    assert uda.lr_at(0) == 1e-4 and uda.lr_at(1000) == 1e-4 and uda.lr_at(3000) == 1e-4  # restarts 1k, +2k
    assert uda.lr_at(500) == pytest.approx(1e-8 + (1e-4 - 1e-8) / 2)
    assert uda.lr_at(2000) == pytest.approx(1e-8 + (1e-4 - 1e-8) * (1 + math.cos(math.pi / 2)) / 2)


def test_federated_round_schedule_decays_over_rounds():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1)
    fed = RoundCosineLR(opt, 1e-4, 1e-6, num_rounds=100)
    assert fed.lr_at(0) == pytest.approx(1e-4) and fed.lr_at(99) == pytest.approx(1e-6)
    assert fed.lr_at(49) == pytest.approx(1e-6 + (1e-4 - 1e-6) * (1 + math.cos(math.pi * 49 / 99)) / 2)
    assert all(fed.lr_at(r) > fed.lr_at(r + 1) for r in range(99))
    fed.step(epoch=30)
    fed.step_iteration()  # constant within a round
    assert opt.param_groups[0]["lr"] == pytest.approx(fed.lr_at(30))
