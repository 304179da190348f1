"""Input checks that fail early with the offending file named."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from mapseg_nnunet.data.errors import DatasetError


def check_case_images(case: str, image_files: List[str], expected_channels: int, reader) -> np.ndarray:
    """Files exist and read completely, the channel count matches dataset.json, and every voxel is finite.
    Returns the images ``(C, X, Y, Z)`` as ``reader`` read them."""
    import os
    if len(image_files) != expected_channels:
        raise DatasetError(f"{image_files[0] if image_files else case}: case {case} has {len(image_files)} "
                           f"channel file(s) but dataset.json declares {expected_channels} channel(s)")
    for f in image_files:
        if not os.path.isfile(f):
            raise DatasetError(f"{f}: file is missing (case {case})")
    try:
        images, _ = reader.read_images(image_files)
    except Exception as e:  # unreadable or corrupt file
        raise DatasetError(f"{image_files}: cannot read case {case}: {e}") from e
    if images.shape[0] != expected_channels:
        raise DatasetError(f"{image_files[0]}: case {case} has {images.shape[0]} channels, dataset.json declares "
                           f"{expected_channels}")
    for c, f in enumerate(image_files):
        if not np.all(np.isfinite(_voxels_as_stored(f, images[c]))):
            raise DatasetError(f"{f}: contains NaN or infinite values (case {case})")
    return images


def _voxels_as_stored(path: str, read_by_nnunet: np.ndarray) -> np.ndarray:
    """SimpleITK's NIfTI reader turns NaN into 0 and reads a truncated ``.nii.gz`` without complaint (the missing
    voxels are garbage), so nnU-Net would silently train on them: check NIfTI files as stored, with nibabel."""
    if path.endswith((".nii", ".nii.gz")):
        import nibabel
        try:
            return np.asarray(nibabel.load(path).dataobj)
        except Exception as e:  # EOFError (truncated gzip), zlib.error, nibabel's ImageFileError, ...
            raise DatasetError(f"{path}: cannot read the image ({type(e).__name__}: {e}); the file is corrupt or "
                               f"truncated (an interrupted copy or download?). Copy it again.") from e
    return read_by_nnunet


def check_files_readable(files: List[str]) -> None:
    """Prediction inputs: every file exists and a compressed file decompresses to its end (SimpleITK, nnU-Net's
    default reader, accepts truncated ``.gz`` files), without decoding the image."""
    import gzip
    import os
    import zlib
    for f in files:
        if not os.path.isfile(f):
            raise DatasetError(f"{f}: file is missing")
        if f.endswith(".gz"):
            try:
                with gzip.open(f, "rb") as stream:
                    while stream.read(1 << 24):
                        pass
            except (EOFError, OSError, zlib.error) as e:
                raise DatasetError(f"{f}: cannot read the image ({type(e).__name__}: {e}); the file is corrupt or "
                                   f"truncated (an interrupted copy or download?). Copy it again.") from e


def check_dataset_images(dataset: Dict[str, dict], expected_channels: int, reader, progress: bool = True,
                         survey: Optional[Callable[[np.ndarray, List[str]], object]] = None) -> dict:
    """Checks every case (:func:`check_case_images`); returns ``{case: survey(images, image files)}`` (each case
    is read once; e.g. :func:`mapseg_nnunet.data.intensity.survey_case`), ``{case: None}`` without ``survey``."""
    from tqdm import tqdm
    out = {}
    for case, entry in tqdm(dataset.items(), desc="Checking images", disable=not progress):
        images = check_case_images(case, entry["images"], expected_channels, reader)
        out[case] = survey(images, entry["images"]) if survey is not None else None
    return out
