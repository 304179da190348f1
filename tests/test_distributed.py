"""DDP: the MAPSeg losses run through a DistributedDataParallel student (2 CPU processes, gloo) and its gradients
are the average of the per-rank gradients; the EMA teacher is a plain module; selection values agree on all
ranks; seeded ranks draw different data. (nnU-Net's own ``-num_gpus`` launcher is CUDA/NCCL only.)"""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

WORLD = 2


def _batch(seed: int, labeled: bool) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {"data": torch.rand(2, 1, 16, 16, 16, generator=g), "global": torch.rand(2, 1, 16, 16, 16, generator=g),
             "box": torch.tensor([[[0, 8], [4, 12], [8, 16]], [[2, 10], [0, 8], [6, 14]]])}
    if labeled:
        batch["target"] = torch.randint(0, 3, (2, 1, 16, 16, 16), generator=g)
        batch["global_target"] = torch.randint(0, 3, (2, 1, 16, 16, 16), generator=g)
    return batch


def _seg_loss(logits, target):
    return F.cross_entropy(logits, target[:, 0].long())


def _losses(student, teacher, rank):
    from mapseg_nnunet.method.losses import MAPSegLossWeights, source_loss, target_loss
    from mapseg_nnunet.method.masking import MaskingSettings
    weights, masking = MAPSegLossWeights(), MaskingSettings()
    torch.manual_seed(1000 + rank)  # the same masks for the DDP and the reference pass
    source, _ = source_loss(student, _seg_loss, _batch(rank, True), weights, masking)
    target, parts = target_loss(student, teacher, _seg_loss, _batch(10 + rank, False), weights, masking)
    return source + target, parts


def _worker(rank: int, init_file: str, out_dir: str):
    from mapseg_nnunet.architectures import MAPSegNet
    from mapseg_nnunet.training.settings import seed_everything
    from mapseg_nnunet.method.teacher import ema_update, make_teacher
    from mapseg_nnunet.method.selection import mean_over_ranks
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    net = MAPSegNet(1, 3, width=8, depth=2, encoder_groups=4, aspp_channels=8, aspp_dilations=(1, 2),
                    head_channels=8, head_groups=4).eval()  # no dropout: deterministic passes
    reference = MAPSegNet(1, 3, width=8, depth=2, encoder_groups=4, aspp_channels=8, aspp_dilations=(1, 2),
                          head_channels=8, head_groups=4).eval()
    reference.load_state_dict(net.state_dict())
    student = torch.nn.parallel.DistributedDataParallel(net)
    teacher = make_teacher(student)
    assert type(teacher) is MAPSegNet and not any(k.startswith("module.") for k in teacher.state_dict())

    loss, parts = _losses(student, teacher, rank)
    loss.backward()
    ref_loss, _ = _losses(reference, teacher, rank)
    ref_loss.backward()
    for p_ddp, p_ref in zip(net.parameters(), reference.parameters()):
        expected = p_ref.grad.clone()
        dist.all_reduce(expected)
        expected /= WORLD
        assert torch.allclose(p_ddp.grad, expected, rtol=1e-4, atol=1e-6), "DDP gradient is not the rank average"
    assert not torch.allclose(reference.encoder.blocks[0].conv1[1].weight.grad,
                              net.encoder.blocks[0].conv1[1].weight.grad)  # ranks saw different batches

    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema_update(teacher, student, 0.5)
    assert torch.allclose(teacher.encoder.blocks[0].conv1[1].weight,
                          net.encoder.blocks[0].conv1[1].weight - 0.5)

    assert mean_over_ranks([float(rank), float(rank)]) == 0.5  # (0 + 0 + 1 + 1) / 4 on every rank
    seed_everything(7)
    torch.save({"draw": torch.rand(3), "mpl": parts["mpl"]}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_losses_gradients_teacher_and_selection(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    draws = [torch.load(tmp_path / f"rank{r}.pt")["draw"] for r in range(WORLD)]
    assert not torch.equal(draws[0], draws[1])  # seeded ranks draw different batches
