import pytest
import torch
from torch import nn

from mapseg_nnunet.architectures import MAPSegNet, crop_and_resize, latent_boxes
from mapseg_nnunet.method.losses import channelwise_cosine_loss
from mapseg_nnunet.planning.presets import PRESETS


def cpu_net(in_channels=1, classes=4, **kw):
    return MAPSegNet(in_channels, classes, **{**PRESETS["cpu"].arch_kwargs(), **kw})


def test_paper_preset_parameter_count_and_layout():
    with torch.device("meta"):
        net = MAPSegNet(1, 8, **PRESETS["paper"].arch_kwargs())
    total = sum(p.numel() for p in net.parameters())
    encoder = sum(p.numel() for p in net.encoder.parameters())
    # reference arithmetic: encoder ~162.8 M, head ~47.0 M, one segmentation net ~210 M
    assert 162.5e6 < encoder < 163.0e6
    assert 46.8e6 < total - encoder < 47.2e6
    blocks = net.encoder.blocks
    assert len(blocks) == 8
    first_conv = blocks[0].conv1[1]
    assert first_conv.kernel_size == (4, 4, 4) and first_conv.stride == (4, 4, 4) and first_conv.in_channels == 1
    assert isinstance(blocks[0].conv1[0], nn.GroupNorm) and blocks[0].conv1[0].num_groups == 1
    assert blocks[1].conv1[0].num_groups == 32 and blocks[1].conv1[1].bias is None
    assert all(b.conv1[1].out_channels == 512 for b in blocks)


def test_only_encoder_keys_transfer_through_stock_pretrained_loading():
    keys = cpu_net().state_dict().keys()
    transferable = [k for k in keys if ".seg_layers." not in k]
    assert transferable and all(k.startswith("encoder.") for k in transferable)
    assert any(k.startswith("decoder.seg_layers.") for k in keys)


@pytest.mark.parametrize("in_channels,classes", [(1, 4), (2, 3)])
def test_output_shapes(in_channels, classes):
    net = cpu_net(in_channels, classes)
    x = torch.rand(2, in_channels, 48, 48, 48)
    assert net(x).shape == (2, classes, 48, 48, 48)
    boxes = torch.tensor([[[0, 24], [8, 40], [10, 48]], [[4, 20], [0, 48], [30, 46]]])
    out = net(x, torch.rand_like(x), boxes)
    assert out["logits"].shape == out["aux_logits"].shape == (2, classes, 48, 48, 48)
    assert out["local_features"].shape == out["global_crop"].shape == (2, 32, 12, 12, 12)


def test_latent_boxes_floor_ceil_and_beyond_the_grid():
    boxes = torch.tensor([[[0, 24], [5, 43], [47, 48]]])
    assert latent_boxes(boxes, 4, (12, 12, 12)).tolist() == [[[0, 6], [1, 11], [11, 12]]]
    # a patch reaching beyond the global view (whole-volume scans) keeps its place: not clipped, one cell at least
    boxes = torch.tensor([[[-10.0, 22.0], [40.0, 70.0], [48.0, 48.0]]])
    assert latent_boxes(boxes, 4, (12, 12, 12)).tolist() == [[[-3, 6], [10, 18], [12, 13]]]


def test_the_global_crop_is_zero_beyond_the_map_and_aligned_within_it():
    torch.manual_seed(0)
    global_map = torch.rand(2, 3, 8, 8, 8, dtype=torch.float64)
    boxes = torch.tensor([[[-2, 6], [0, 8], [4, 12]], [[9, 11], [0, 8], [0, 8]]])
    crops = crop_and_resize(global_map, boxes, (8, 8, 8))  # sizes 8: the resize is the identity
    torch.testing.assert_close(crops[0, :, 2:, :, :4], global_map[0, :, :6, :, 4:])
    assert crops[0, :, :2].abs().max() == 0 and crops[0, :, :, :, 4:].abs().max() == 0
    assert crops[1].abs().max() == 0  # wholly outside: no global context
    inside = torch.tensor([[[1, 5], [2, 8], [0, 3]]] * 2)
    torch.testing.assert_close(crop_and_resize(global_map, inside, (4, 6, 3)), global_map[:, :, 1:5, 2:8, 0:3])


def test_glc_crop_matches_brute_force_on_coordinate_volume():
    # latent whose channel 0/1/2 hold the x/y/z coordinate: trilinear interpolation of a linear field is exact,
    # so the crop resized with align_corners=True must equal the analytic sampling positions
    size = 12
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float64)] * 3, indexing="ij"))
    latent = torch.stack([grid, grid + 100]).double()  # batch of 2, 3 channels
    boxes = torch.tensor([[[2, 7], [0, 12], [5, 6]], [[0, 3], [4, 10], [1, 12]]])
    out_size = (6, 5, 4)
    crops = crop_and_resize(latent, boxes, out_size)
    for b in range(2):
        for axis in range(3):
            lo, hi = boxes[b, axis].tolist()
            n = out_size[axis]
            positions = torch.tensor([lo + j * (hi - 1 - lo) / (n - 1) if n > 1 else lo for j in range(n)],
                                     dtype=torch.float64)
            shape = [1, 1, 1]
            shape[axis] = n
            expected = positions.view(shape).expand(out_size) + 100 * b
            torch.testing.assert_close(crops[b, axis], expected)


def test_batch_equals_per_sample():
    torch.manual_seed(0)
    net = cpu_net().eval().double()  # float64: batched and single convolutions agree to rounding
    x, g = torch.rand(3, 1, 48, 48, 48, dtype=torch.float64), torch.rand(3, 1, 48, 48, 48, dtype=torch.float64)
    boxes = torch.tensor([[[0, 48], [0, 48], [0, 48]], [[4, 20], [10, 30], [0, 48]], [[30, 46], [0, 16], [8, 9]]])
    with torch.no_grad():
        batched = net(x, g, boxes)
        for i in range(3):
            single = net(x[i:i + 1], g[i:i + 1], boxes[i:i + 1])
            for key in ("logits", "aux_logits", "global_crop"):
                torch.testing.assert_close(batched[key][i:i + 1], single[key])


def test_patch_only_forward_is_glc_with_the_patch_as_its_own_context():
    torch.manual_seed(0)
    net = cpu_net().eval()
    x = torch.rand(2, 1, 48, 48, 48)
    full = torch.tensor([[[0, 48]] * 3] * 2)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x, x, full, with_aux=False)["logits"])


def test_cosine_regularizer_is_per_channel_over_space():
    torch.manual_seed(0)
    a, b = torch.randn(1, 8, 3, 3, 3), torch.randn(1, 8, 3, 3, 3)
    reference = nn.CosineEmbeddingLoss()(a.flatten(2).squeeze(0), b.flatten(2).squeeze(0), torch.ones(8))
    torch.testing.assert_close(channelwise_cosine_loss(a, b), reference)
    # per-voxel cosine over channels would differ
    per_voxel = (1 - torch.cosine_similarity(a, b, dim=1)).mean()
    assert not torch.isclose(per_voxel, reference)
    # batch: mean over samples of the per-sample loss
    a2, b2 = torch.randn(2, 8, 3, 3, 3), torch.randn(2, 8, 3, 3, 3)
    per_sample = torch.stack([channelwise_cosine_loss(a2[i:i + 1], b2[i:i + 1]) for i in range(2)]).mean()
    torch.testing.assert_close(channelwise_cosine_loss(a2, b2), per_sample)


def test_deep_supervision_is_refused():
    with pytest.raises(ValueError, match="no deep supervision"):
        cpu_net(deep_supervision=True)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    net = MAPSegNet(1, 3, width=16, depth=3, encoder_groups=4, aspp_channels=16, aspp_dilations=(1, 2, 3),
                    head_channels=8, head_groups=4, dropout=0.0)
    x = torch.rand(2, 1, 16, 16, 16)
    calls, block = [], net.encoder.blocks[1]
    block_forward = block.forward
    block.forward = lambda inp: calls.append(1) or block_forward(inp)
    grads, block_calls = [], []
    for checkpointing in (False, True):
        net.zero_grad()
        calls.clear()
        net.encoder.activation_checkpointing = checkpointing
        out = net(x, x.flip(2), torch.tensor([[[0., 8.], [4., 12.], [8., 16.]]] * 2))
        (out["logits"].square().mean() + out["aux_logits"].mean()).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
        block_calls.append(len(calls))
    assert block_calls == [2, 4]  # local + global pass; recomputed in backward when checkpointing
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(plain, checkpointed)
