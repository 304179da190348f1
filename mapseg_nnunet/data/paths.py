"""nnU-Net's folder variables and dataset names, with errors that say what is missing."""
from __future__ import annotations

import os

from mapseg_nnunet.data.errors import DatasetError


def nnunet_paths() -> tuple:
    """``(nnUNet_raw, nnUNet_preprocessed)``; a clear error when either is not set."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    for name, value in (("nnUNet_raw", nnUNet_raw), ("nnUNet_preprocessed", nnUNet_preprocessed)):
        if not value.is_set():
            raise DatasetError(f"environment variable {name} is not set")
    return os.fspath(nnUNet_raw), os.fspath(nnUNet_preprocessed)



def dataset_name(dataset: str | int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        return maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise DatasetError(f"dataset {dataset}: {e}") from e
