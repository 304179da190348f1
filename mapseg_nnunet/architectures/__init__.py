from mapseg_nnunet.architectures.mapseg_net import MAPSegMAENet, MAPSegNet, crop_and_resize, latent_boxes
from mapseg_nnunet.architectures.unwrap import unwrap_network

__all__ = ["MAPSegMAENet", "MAPSegNet", "crop_and_resize", "latent_boxes", "unwrap_network"]
