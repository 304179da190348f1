"""Network size and cost of global-local collaboration, measured side by side in one run.

    python -m benchmarks.studies.network_cost [--repeats 5]

Prints the parameter count of each preset; for the paper-size GLC ResEnc U-Net (``MAPSegResEncPlans``: 96^3,
the 5-stage ResEnc U-Net nnU-Net's ResEnc planner derives for an isotropic 96^3 patch) nnU-Net's own memory estimate
at batch 1; and, on this machine's CPU with the CPU preset, the time of one
training step (forward + backward) of the GLC forward pass (local + global encoder passes, fused and auxiliary
decoder passes) relative to the patch-only forward pass. Absolute times are machine noise; the ratio is the
result."""
import argparse

import torch

from mapseg_nnunet.architectures import MAPSegNet
from mapseg_nnunet.method.losses import channelwise_cosine_loss
from mapseg_nnunet.planning.presets import PRESETS

from ..speed import median_time as step_time


def parameter_counts(num_classes: int = 8):
    rows = []
    for name, preset in PRESETS.items():
        with torch.device("meta"):
            net = MAPSegNet(1, num_classes, **preset.arch_kwargs())
        total = sum(p.numel() for p in net.parameters())
        encoder = sum(p.numel() for p in net.encoder.parameters())
        rows.append((name, preset.plans_name, list(preset.patch_size), total, encoder))
    return rows


# nnU-Net's planners size patches and batches so that compute_conv_feature_map_size(patch) x batch stays under
# UNet_reference_val_3d (680e6 for ResEnc) per UNet_reference_val_corresp_bs_3d (2) samples at
# UNet_reference_val_corresp_GB (8 GB, with AMP)
NNUNET_BYTES_PER_FEATURE_VOXEL = 8e9 / (2 * 680e6)


def paper_resenc_memory_estimate(num_classes: int = 8) -> dict:
    """nnU-Net's feature-map estimate of the paper-size GLC ResEnc U-Net at batch 1, converted with nnU-Net's own
    reference (GB): one plain U-Net pass, one GLC pass (local U-Net + global encoder + global auxiliary decoder) and
    a UDA step, whose single backward keeps three GLC passes (source unmasked and masked, target masked; the
    teacher runs without gradients)."""
    from torch import nn
    from mapseg_nnunet.architectures.glc_unet import GLCUNet
    net = GLCUNet(1, num_classes, "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                  fusion_stage=2, n_stages=5, features_per_stage=(32, 64, 128, 256, 320), conv_op=nn.Conv3d,
                  kernel_sizes=3, strides=(1, 2, 2, 2, 2), n_blocks_per_stage=(1, 3, 4, 6, 6),
                  n_conv_per_stage_decoder=(1, 1, 1, 1), conv_bias=True, norm_op=nn.InstanceNorm3d,
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    patch = (96, 96, 96)
    unet = net.unet.compute_conv_feature_map_size(patch)
    glc = unet + unet  # the global view passes the encoder and, for the auxiliary prediction, the decoder
    gb = NNUNET_BYTES_PER_FEATURE_VOXEL / 1e9
    return {"parameters": sum(p.numel() for p in net.parameters()),
            "unet_pass_gb": unet * gb, "glc_pass_gb": glc * gb, "uda_step_gb": 3 * glc * gb}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| preset | plans | patch | parameters (8 classes) | encoder |")
    print("|---|---|---|---|---|")
    for name, plans, patch, total, encoder in parameter_counts():
        print(f"| {name} | {plans} | {patch} | {total:,} | {encoder:,} |")
    m = paper_resenc_memory_estimate()
    print(f"\nMAPSegResEncPlans (GLC ResEnc U-Net, 96^3, 8 classes): {m['parameters']:,} parameters; nnU-Net's "
          f"memory estimate at batch 1: U-Net pass {m['unet_pass_gb']:.1f} GB, GLC pass {m['glc_pass_gb']:.1f} GB, "
          f"UDA step (3 GLC passes in one backward) {m['uda_step_gb']:.1f} GB")

    torch.manual_seed(0)
    preset = PRESETS["cpu"]
    net = MAPSegNet(1, 4, **preset.arch_kwargs())
    b = preset.batch_size
    x, g = torch.rand(b, 1, *preset.patch_size), torch.rand(b, 1, *preset.patch_size)
    boxes = torch.tensor([[[0, s // 2] for s in preset.patch_size]] * b)

    def patch_only():
        net.zero_grad()
        net(x).mean().backward()

    def glc():
        net.zero_grad()
        out = net(x, g, boxes)
        (out["logits"].mean() + out["aux_logits"].mean()
         + channelwise_cosine_loss(out["local_features"], out["global_crop"])).backward()

    t_patch, t_glc = step_time(patch_only, args.repeats), step_time(glc, args.repeats)
    print(f"\nCPU preset, batch {b}, median of {args.repeats} steps (forward + backward):")
    print(f"  patch-only {t_patch * 1000:.0f} ms, GLC {t_glc * 1000:.0f} ms, ratio GLC / patch-only "
          f"{t_glc / t_patch:.2f}")


if __name__ == "__main__":
    main()
