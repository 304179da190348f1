"""Network and patch presets. ``paper`` is the published configuration (96^3 patches, width 512, about 210 M
parameters per segmentation network) for GPUs; ``cpu`` runs the same code path at a size a 2-core CPU trains in
minutes (demo, tests, benchmarks)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

NETWORK_CLASS_NAME = "mapseg_nnunet.architectures.mapseg_net.MAPSegNet"
GLC_UNET_CLASS_NAME = "mapseg_nnunet.architectures.glc_unet.GLCUNet"
# MAPSegNet's encoder downsamples once, by this factor; GLC U-Nets fuse the global view at the encoder stage of the
# same output stride
LATENT_STRIDE = 4


@dataclass(frozen=True)
class MAPSegPreset:
    name: str
    plans_name: str
    patch_size: Tuple[int, int, int]
    batch_size: int
    width: int
    depth: int = 8
    latent_stride: int = LATENT_STRIDE
    encoder_groups: int = 32
    aspp_channels: int = 512
    aspp_dilations: Tuple[int, ...] = (4, 8, 16)
    head_channels: int = 64
    head_groups: int = 8
    dropout: float = 0.1
    mae_channels: Tuple[int, int] = (32, 16)  # MAE decoder widths (plans: configurations[c]['mapseg'])

    def arch_kwargs(self) -> Dict:
        kwargs = asdict(self)
        for key in ("name", "plans_name", "patch_size", "batch_size", "mae_channels"):
            kwargs.pop(key)
        kwargs["aspp_dilations"] = list(self.aspp_dilations)
        return kwargs

    def architecture(self) -> Dict:
        """The plans' ``architecture`` entry; nnU-Net rebuilds the network from it with ``pydoc.locate``."""
        return {"network_class_name": NETWORK_CLASS_NAME, "arch_kwargs": self.arch_kwargs(),
                "_kw_requires_import": []}


PRESETS: Dict[str, MAPSegPreset] = {
    "paper": MAPSegPreset(name="paper", plans_name="MAPSegPlans", patch_size=(96, 96, 96), batch_size=1,
                          width=512),
    "cpu": MAPSegPreset(name="cpu", plans_name="MAPSegPlansCPU", patch_size=(32, 32, 32), batch_size=2,
                        width=32, encoder_groups=8, aspp_channels=32, aspp_dilations=(1, 3, 5),
                        head_channels=16, mae_channels=(16, 8)),
}
