from mapseg_nnunet.architectures.mapseg_net import MAPSegNet, channelwise_cosine_loss, crop_and_resize, latent_boxes

__all__ = ["MAPSegNet", "channelwise_cosine_loss", "crop_and_resize", "latent_boxes"]
