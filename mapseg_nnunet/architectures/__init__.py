from mapseg_nnunet.architectures.glc import GLCNetwork, crop_and_resize, glc_forward, latent_boxes
from mapseg_nnunet.architectures.glc_unet import GLCUNet
from mapseg_nnunet.architectures.mapseg_net import MAPSegMAENet, MAPSegNet
from mapseg_nnunet.architectures.unwrap import unwrap_network

__all__ = ["GLCNetwork", "GLCUNet", "MAPSegMAENet", "MAPSegNet", "crop_and_resize", "glc_forward", "latent_boxes",
           "unwrap_network"]
