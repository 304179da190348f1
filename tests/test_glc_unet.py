"""The GLC U-Net adapter: nnU-Net's U-Net inside the GLC seam, starting out as the plain U-Net."""
import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from mapseg_nnunet.architectures import GLCUNet, glc_forward
from mapseg_nnunet.architectures.glc_unet import cumulative_strides

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def unet_kwargs(unet_class_name=PLAIN, n_stages=3):
    kwargs = {"n_stages": n_stages, "features_per_stage": [8 * 2 ** i for i in range(n_stages)],
              "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n_stages,
              "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1), "n_conv_per_stage_decoder": [1] * (n_stages - 1),
              "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
              "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    kwargs["n_blocks_per_stage" if unet_class_name == RESENC else "n_conv_per_stage"] = [1] * n_stages
    return kwargs


def tiny_glc_unet(unet_class_name=PLAIN, num_classes=3, fusion_stage=1, input_channels=1):
    """A GLCUNet as nnU-Net builds networks from plans (kwargs that name classes imported, nnU-Net's init)."""
    kwargs = {"unet_class_name": unet_class_name, "fusion_stage": fusion_stage, **unet_kwargs(unet_class_name)}
    return get_network_from_plans("mapseg_nnunet.architectures.glc_unet.GLCUNet", kwargs,
                                  ["conv_op", "norm_op", "dropout_op", "nonlin"], input_channels, num_classes,
                                  allow_init=True, deep_supervision=False)


@pytest.mark.parametrize("unet_class_name", [PLAIN, RESENC])
def test_starts_out_as_the_plain_unet(unet_class_name):
    torch.manual_seed(0)
    net = tiny_glc_unet(unet_class_name).eval()
    x, g = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    boxes = torch.tensor([[[0., 8.], [4., 12.], [8., 16.]], [[2., 10.], [0., 16.], [5., 9.]]])
    with torch.no_grad():
        plain = net.unet(x)
        torch.testing.assert_close(net(x), plain)
        out = net(x, g, boxes)
        torch.testing.assert_close(out["logits"], plain)  # the global view does not change the start
        torch.testing.assert_close(out["aux_logits"], net.unet(g))
        assert out["local_features"].shape == out["global_crop"].shape == (2, 16, 8, 8, 8)
        net.fusion.weight.normal_(0, 0.3)  # a trained fusion: the global view matters
        assert (net(x, g, boxes)["logits"] - plain).abs().max() > 1e-3


def test_global_crop_is_the_global_map_at_the_box():
    torch.manual_seed(0)
    net = tiny_glc_unet(fusion_stage=2).eval()  # stride 4: 16^3 view -> 4^3 map
    assert net.fusion_stride == (4, 4, 4) and cumulative_strides([[1, 1, 1], [2, 1, 2], [2, 2, 2]], 2) == (4, 2, 4) \
        and cumulative_strides([[1, 1], [2, 2], [2, 1]], 2) == (4, 2) and cumulative_strides([1, 2, 2], 1) == (2,)
    g = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        features = net.encode(g)
        global_map = net.fusion_map(features)
        _, local_map, crop = net.fuse_and_decode(features, global_map, torch.tensor([[[0., 16.]] * 3]))
    torch.testing.assert_close(crop, global_map)  # the whole view's box is the whole map
    torch.testing.assert_close(local_map, features[2])


def test_every_key_but_the_head_transfers_between_mae_and_segmentation_networks():
    """The MAE network is the same GLC U-Net with one output per input channel: stock -pretrained_weights (which
    skips `.seg_layers.`) transfers encoder, decoder and fusion."""
    segmentation, mae = tiny_glc_unet(num_classes=4).state_dict(), tiny_glc_unet(num_classes=1).state_dict()
    differing = {k for k in segmentation if k not in mae or mae[k].shape != segmentation[k].shape}
    assert differing and all(".seg_layers." in k for k in differing)
    assert any(k.startswith("fusion.") for k in segmentation) and any(k.startswith("unet.decoder.stages") for k in mae)


def test_gradients_reach_the_fusion_and_both_views():
    torch.manual_seed(0)
    net = tiny_glc_unet()
    x, g = torch.rand(2, 1, 16, 16, 16, requires_grad=True), torch.rand(2, 1, 16, 16, 16, requires_grad=True)
    out = glc_forward(net, x, g, torch.tensor([[[0., 8.], [4., 12.], [8., 16.]]] * 2))
    (out["logits"].mean() + out["aux_logits"].mean()).backward()
    assert net.fusion.weight.grad.abs().sum() > 0 and g.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_refuses_deep_supervision_and_unknown_classes():
    with pytest.raises(ValueError, match="deep supervision"):
        GLCUNet(1, 3, PLAIN, 1, deep_supervision=True, **unet_kwargs())
    with pytest.raises(ValueError, match="wraps"):
        GLCUNet(1, 3, "torch.nn.Conv3d", 1, **unet_kwargs())
    with pytest.raises(ValueError, match="fusion_stage 5"):
        tiny_glc_unet(fusion_stage=5)
