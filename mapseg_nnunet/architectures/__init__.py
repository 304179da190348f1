from mapseg_nnunet.architectures.mapseg_net import (MAPSegMAENet, MAPSegNet, channelwise_cosine_loss, crop_and_resize,
                                                  latent_boxes)

__all__ = ["MAPSegMAENet", "MAPSegNet", "channelwise_cosine_loss", "crop_and_resize", "latent_boxes"]
