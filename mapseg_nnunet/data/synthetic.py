"""Small synthetic nnU-Net datasets (nested ellipsoids on a noisy background) for tests and smoke runs."""
from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from mapseg_nnunet.data.foreground_box import foreground_box


def _case(rng: np.random.Generator, shape, num_classes: int):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    center = np.array(shape) / 2 + rng.uniform(-3, 3, 3)
    radii = np.array(shape) * rng.uniform(0.3, 0.4, 3)
    r = np.sqrt((((grid - center) / radii) ** 2).sum(-1))
    label = np.zeros(shape, np.uint8)
    # a dim "head" filling most of the field of view, so that cropping to non-zero keeps the volume size
    head = np.sqrt((((grid - np.array(shape) / 2) / (np.array(shape) * 0.52)) ** 2).sum(-1)) < 1
    image = np.where(head, 20.0, 0.0).astype(np.float32)
    for c in range(1, num_classes):
        inside = r < 1.0 - (c - 1) / num_classes
        label[inside] = c
        image[inside] = 100.0 * c
    image[head] += rng.normal(0, 5, int(head.sum())).astype(np.float32)
    return image, label


def write_synthetic_dataset(raw_folder: str, dataset_id: int, name: str = "Synthetic", num_cases: int = 6,
                            shape=(52, 52, 52), num_classes: int = 3, seed: int = 0,
                            spacing=(1.0, 1.0, 1.0), channel_name: str = "T1",
                            labeled: bool = True) -> str:
    rng = np.random.default_rng(seed)
    folder = os.path.join(raw_folder, f"Dataset{dataset_id:03d}_{name}")
    os.makedirs(os.path.join(folder, "imagesTr"), exist_ok=True)
    if labeled:
        os.makedirs(os.path.join(folder, "labelsTr"), exist_ok=True)
    for i in range(num_cases):
        image, label = _case(rng, shape, num_classes)
        for arr, path in ((image, os.path.join(folder, "imagesTr", f"case{i:03d}_0000.nii.gz")),
                          (label, os.path.join(folder, "labelsTr", f"case{i:03d}.nii.gz"))):
            if arr is label and not labeled:
                continue
            itk = sitk.GetImageFromArray(arr)
            itk.SetSpacing(tuple(float(s) for s in spacing))
            sitk.WriteImage(itk, path)
    labels = {"background": 0, **{f"class{c}": c for c in range(1, num_classes)}}
    generate_dataset_json(folder, {0: channel_name}, labels, num_cases, ".nii.gz", dataset_name=name)
    return folder


LPS_DIRECTIONS = (-1.0, -1.0, 1.0)  # voxel axes pointing left, posterior, superior (RAS+ affine diagonal signs)


def zscored_brain_case(rng: np.random.Generator, shape=(40, 48, 36), num_classes: int = 3,
                       background_mode: str = "constant"):
    """A brain-like case as public multi-sequence collections ship them: tissue with a bright lesion inside a
    head on a zero background, then z-scored with the brain's mean and standard deviation.
    ``background_mode='constant'`` applies the z-score to the whole volume, so the background is a constant
    negative value (the case's minimum; nnU-Net's crop to non-zero crops nothing); ``'zero'`` z-scores the brain
    only and leaves the background at 0, above the darker brain voxels. Returns ``(image float32, label uint8,
    brain mask bool)``."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    centre = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
    brain = np.sqrt((((grid - centre) / (np.array(shape) * 0.38)) ** 2).sum(-1)) < 1
    image = np.zeros(shape, np.float32)
    image[brain] = rng.normal(300, 60, int(brain.sum()))  # grey / white matter mixture, CSF below
    label = np.zeros(shape, np.uint8)
    lesion_centre = centre + rng.uniform(-3, 3, 3)
    for c in range(1, num_classes):
        inside = np.sqrt((((grid - lesion_centre) / (np.array(shape) * 0.15)) ** 2).sum(-1)) < 1 - (c - 1) / num_classes
        label[inside] = c
        image[inside] = rng.normal(300 + 150 * c, 30, int(inside.sum()))
    image[brain] = np.maximum(image[brain], 1.0)
    mean, std = image[brain].mean(), image[brain].std()
    if background_mode == "constant":
        image = (image - mean) / std
    elif background_mode == "zero":
        image[brain] = (image[brain] - mean) / std
    else:
        raise ValueError(f"background_mode must be 'constant' or 'zero', got {background_mode!r}")
    return image.astype(np.float32), label, brain


def write_zscored_dataset(raw_folder: str, dataset_id: int, name: str = "ZScored", num_cases: int = 3,
                          shape=(40, 48, 36), spacing=(1.0, 1.0, 1.0), num_classes: int = 3, seed: int = 0,
                          channel_name: str = "FLAIR", labeled: bool = True,
                          background_mode: str = "constant") -> str:
    """:func:`zscored_brain_case` cases as an nnU-Net raw dataset of LPS-oriented NIfTI files (nibabel) at
    ``spacing`` (1 mm or anisotropic)."""
    import nibabel
    rng = np.random.default_rng(seed)
    folder = os.path.join(raw_folder, f"Dataset{dataset_id:03d}_{name}")
    os.makedirs(os.path.join(folder, "imagesTr"), exist_ok=True)
    if labeled:
        os.makedirs(os.path.join(folder, "labelsTr"), exist_ok=True)
    affine = np.diag([d * s for d, s in zip(LPS_DIRECTIONS, spacing)] + [1.0])
    affine[:3, 3] = [120.0, 120.0, -70.0]
    for i in range(num_cases):
        image, label, _ = zscored_brain_case(rng, shape, num_classes, background_mode)
        nibabel.save(nibabel.Nifti1Image(image, affine), os.path.join(folder, "imagesTr", f"case{i:03d}_0000.nii.gz"))
        if labeled:
            nibabel.save(nibabel.Nifti1Image(label, affine), os.path.join(folder, "labelsTr", f"case{i:03d}.nii.gz"))
    labels = {"background": 0, **{f"class{c}": c for c in range(1, num_classes)}}
    generate_dataset_json(folder, {0: channel_name}, labels, num_cases, ".nii.gz", dataset_name=name)
    return folder


def whole_volume_case(rng: np.random.Generator, field=(128, 128, 128), object_shape=(40, 40, 40)):
    """A brain-like object of about ``object_shape`` voxels (class 1: textured tissue, class 2: a brighter core
    inside it) at a random place in a much larger field of view, z-scored over the whole volume, so that the air
    around it is one constant negative value that fills most of the case (a whole-volume scan as distributed;
    nnU-Net's crop to non-zero crops nothing). Returns ``(image float32, label uint8, object box (3, 2)
    [start, end))``."""
    field, object_shape = np.asarray(field), np.asarray(object_shape)
    start = np.array([rng.integers(4, f - o - 3) for f, o in zip(field, object_shape)])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in field], indexing="ij"), -1).astype(np.float32)
    centre = start + object_shape / 2 + rng.uniform(-1, 1, 3)
    tissue = np.sqrt((((grid - centre) / (object_shape / 2)) ** 2).sum(-1)) < 1
    core = tissue & (np.sqrt((((grid - centre - rng.uniform(-2, 2, 3)) / (object_shape * 0.22)) ** 2).sum(-1)) < 1)
    label = np.zeros(tuple(field), np.uint8)
    label[tissue], label[core] = 1, 2
    image = np.zeros(tuple(field), np.float32)
    image[tissue] = np.maximum(rng.normal(300, 40, int(tissue.sum())), 1.0)
    image[core] = rng.normal(500, 30, int(core.sum()))
    image = (image - image.mean()) / image.std()
    box = foreground_box(tissue)
    return image.astype(np.float32), label, box


def write_whole_volume_dataset(raw_folder: str, dataset_id: int, name: str = "WholeVolume", num_cases: int = 4,
                               field=(128, 128, 128), object_shape=(40, 40, 40), seed: int = 0,
                               channel_name: str = "MRI", images: str = "imagesTr", labels: str = "labelsTr") -> str:
    """:func:`whole_volume_case` cases as an nnU-Net raw dataset at 1 mm (``images`` / ``labels`` name the
    sub-folders, e.g. imagesTs / labelsTs for held-out cases)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(raw_folder, f"Dataset{dataset_id:03d}_{name}")
    os.makedirs(os.path.join(folder, images), exist_ok=True)
    os.makedirs(os.path.join(folder, labels), exist_ok=True)
    for i in range(num_cases):
        image, label, _ = whole_volume_case(rng, field, object_shape)
        for arr, path in ((image, os.path.join(folder, images, f"case{i:03d}_0000.nii.gz")),
                          (label, os.path.join(folder, labels, f"case{i:03d}.nii.gz"))):
            sitk.WriteImage(sitk.GetImageFromArray(arr), path)
    if images == "imagesTr":
        generate_dataset_json(folder, {0: channel_name}, {"background": 0, "tissue": 1, "core": 2}, num_cases,
                              ".nii.gz", dataset_name=name)
    return folder
