"""The plain module behind nnU-Net's wrappers (DistributedDataParallel, ``torch.compile``)."""
from torch import nn


def unwrap_network(network: nn.Module) -> nn.Module:
    if hasattr(network, "module"):  # DDP
        network = network.module
    return getattr(network, "_orig_mod", network)  # torch.compile
