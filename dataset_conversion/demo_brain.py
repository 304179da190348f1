"""Demo cohort from real anatomy, offline: the MNI ICBM152 2009a (symmetric) T1 template and its grey / white
matter probability maps, shipped in the ``nilearn`` wheel.

Writes into ``nnUNet_raw`` (deterministic given ``--seed``):

* a labeled **source** (T1w), ``Dataset{S}_DemoBrainSourceT1w``: imagesTr + labelsTr;
* three unlabeled **targets**, each with imagesTr (10 cases, no labels) and a labeled test split imagesTs/labelsTs
  (16 cases: enough to tell a few Dice points from case-to-case noise) used for evaluation only, modelled on the
  domain shifts of the MAPSeg paper:
  - ``DemoBrainTargetT2w`` (cross-sequence): T2w-like tissue contrast (CSF bright, WM dark);
  - ``DemoBrainTargetSite`` (cross-site): the T1w contrast from another scanner and protocol: thick-slice
    acquisition (slices of 2 voxels = 4.4 mm averaged along the superior axis, interpolated back), a strong smooth
    multiplicative bias field, blur, Rician noise, a non-linear intensity response and a field of view that stops
    short of the vertex (the top 12-20 % of the brain is not imaged: image and label are 0 there);
  - ``DemoBrainTargetAge`` (cross-age): the 0-6-month infant brain on T1w: smaller (x0.82), a relatively wider CSF
    space (the tissue maps eroded by one voxel before labelling), grey/white contrast inverted (unmyelinated white
    matter darker than grey matter), lower signal-to-noise ratio.

Subjects differ by a random isotropic scaling, a small rotation and translation, and a smooth random
deformation; labels are warped with the same field. All images share the ``MRI`` channel name (one channel).

Label rule (documented, 4 classes): inside the intracranial mask, class = argmax(p_CSF, p_GM, p_WM) with
p_CSF = 1 - p_GM - p_WM (clipped at 0); 0 outside. The intracranial mask is p_GM + p_WM > 0.1, holes filled,
closed and dilated by 2 mm. No deep-grey class: the GM/WM maps do not separate subcortical from cortical grey
matter, and a depth threshold would be a guess.

    python -m mapseg_nnunet.dataset_conversion.demo_brain [-d 951 952 953 954] [--seed 0]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import time
from typing import Dict, Optional, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mapseg_nnunet.planning.presets import PRESETS

SPACING_MM = 2.2
GRID = (84, 104, 88)  # (x, y, z) voxels at SPACING_MM: room for the largest, rotated source brains
LABELS = {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
DOMAINS = ("T2w", "Site", "Age")
DEFAULT_IDS = (951, 952, 953, 954)
DEFAULT_COUNTS = {"source_train": 12, "target_train": 10, "target_test": 16}
# test cases of each target drawn from the cohort's main random stream; those beyond come from a stream of the
# target's own (``extra_test_stream``), so that more test cases leave every other case of the cohort as it was
MAIN_STREAM_TEST_CASES = 4
AGE_SCALE = 0.82  # infant brains relative to the source's
MIN_EXTENT = min(PRESETS["cpu"].patch_size)  # voxels per axis: the CPU preset's patch side (MAPSegPlannerCPU)


def template_folder() -> str:
    spec = importlib.util.find_spec("nilearn")
    if spec is None:
        raise RuntimeError("the demo cohort needs the nilearn wheel (pip install nilearn), which ships the MNI "
                           "ICBM152 2009a templates")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data")


def load_templates() -> Dict[str, np.ndarray]:
    """Templates resampled to SPACING_MM and centred in GRID: t1 in [0, 1], p_gm, p_wm, intracranial mask."""
    import nibabel
    folder = template_folder()
    out = {}
    for key in ("t1", "gm", "wm"):
        img = nibabel.as_closest_canonical(nibabel.load(
            os.path.join(folder, f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz")))
        out[key] = np.asarray(img.dataobj, dtype=np.float32) / 255.0
    mask = (out["gm"] + out["wm"]) > 0.1
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=3))
    mask = ndimage.binary_dilation(mask, iterations=2)
    out["mask"] = mask.astype(np.float32)
    # crop to the intracranial box, resample to SPACING_MM
    box = tuple(slice(a.min(), a.max() + 1) for a in np.nonzero(mask))
    centred = {}
    for key, arr in out.items():
        arr = ndimage.zoom(arr[box], 1.0 / SPACING_MM, order=1)
        canvas = np.zeros(GRID, np.float32)
        offset = [(g - s) // 2 for g, s in zip(GRID, arr.shape)]
        if min(offset) < 0:
            raise RuntimeError(f"template does not fit the {GRID} grid at {SPACING_MM} mm")
        canvas[tuple(slice(o, o + s) for o, s in zip(offset, arr.shape))] = arr
        centred[key] = canvas
    return centred


def _warp_field(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Sampling coordinates (3, *GRID): random similarity transform around the centre + smooth deformation."""
    angles = np.deg2rad(rng.uniform(-6, 6, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
    centre = (np.array(GRID) - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(g, dtype=np.float32) for g in GRID], indexing="ij"))
    rel = grid.reshape(3, -1) - centre[:, None]
    coords = (rot.T @ rel) / scale + centre[:, None] + rng.uniform(-2, 2, 3)[:, None]
    coords = coords.reshape(3, *GRID)
    for axis in range(3):
        noise = ndimage.gaussian_filter(rng.normal(size=GRID).astype(np.float32), sigma=5)
        coords[axis] += noise / (noise.std() + 1e-8) * 1.2  # ~1.2 voxel smooth displacement
    return coords.astype(np.float32)


def _subject(templates: Dict[str, np.ndarray], rng: np.random.Generator, scale: float, domain: str = "source"):
    coords = _warp_field(rng, scale)
    warped = {k: ndimage.map_coordinates(v, coords, order=1, mode="constant") for k, v in templates.items()}
    mask = warped["mask"] > 0.5
    if domain == "Age":  # wider CSF space: grey and white matter recede from the skull by about one voxel
        tissue = ndimage.binary_erosion((warped["gm"] + warped["wm"]) > 0.5, iterations=1)
        shrink = ndimage.gaussian_filter(tissue.astype(np.float32), 0.7)
        warped["gm"], warped["wm"] = warped["gm"] * shrink, warped["wm"] * shrink
    if domain == "Site":  # the field of view stops short of the vertex
        top = np.nonzero(mask.any(axis=(0, 1)))[0]
        cut = int(round(top[-1] - rng.uniform(0.12, 0.20) * (top[-1] - top[0])))
        mask[:, :, cut:] = False
    p_gm, p_wm = warped["gm"], warped["wm"]
    p_csf = np.clip(1 - p_gm - p_wm, 0, None)
    label = (np.argmax(np.stack([p_csf, p_gm, p_wm]), axis=0) + 1).astype(np.uint8)
    label[~mask] = 0
    return warped, label, mask


def _bias_field(rng: np.random.Generator, strength: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=GRID).astype(np.float32), sigma=14)
    field /= np.abs(field).max() + 1e-8
    return np.exp(strength * field)


def _thick_slices(volume: np.ndarray, factor: int) -> np.ndarray:
    """Slices ``factor`` voxels thick along the last (superior) axis: block means, linearly interpolated back."""
    z = volume.shape[2] // factor * factor
    thick = volume[:, :, :z].reshape(volume.shape[0], volume.shape[1], -1, factor).mean(3)
    centres = np.arange(thick.shape[2]) * factor + (factor - 1) / 2
    index = np.clip(np.interp(np.arange(volume.shape[2]), centres, np.arange(thick.shape[2])), 0,
                    thick.shape[2] - 1)
    lo = np.floor(index).astype(int)
    hi = np.minimum(lo + 1, thick.shape[2] - 1)
    weight = (index - lo)[None, None, :]
    return (thick[:, :, lo] * (1 - weight) + thick[:, :, hi] * weight).astype(np.float32)


def render(domain: str, warped: Dict[str, np.ndarray], mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Image intensities of one subject in one domain (background exactly 0)."""
    p_gm, p_wm, t1 = warped["gm"], warped["wm"], warped["t1"]
    p_csf = np.clip(1 - p_gm - p_wm, 0, None)
    texture = t1 - ndimage.gaussian_filter(t1, 2)  # fine real-anatomy detail of the template
    if domain == "source":
        image = t1 * rng.uniform(0.95, 1.05) + rng.normal(0, 0.01, GRID)
    elif domain == "T2w":
        image = 0.95 * p_csf + 0.55 * p_gm + 0.32 * p_wm - 0.5 * texture + rng.normal(0, 0.015, GRID)
    elif domain == "Site":
        image = _thick_slices(t1, 2)
        image = ndimage.gaussian_filter(image, (rng.uniform(0.7, 1.0),) * 2 + (0.3,)) * _bias_field(rng, 0.6)
        image = np.clip(image, 0, None) ** rng.uniform(0.55, 0.7)  # non-linear intensity response
        sigma = rng.uniform(0.04, 0.06)
        image = np.sqrt((image + rng.normal(0, sigma, GRID)) ** 2 + rng.normal(0, sigma, GRID) ** 2)  # Rician
    elif domain == "Age":
        image = 0.15 * p_csf + 0.6 * p_gm + 0.42 * p_wm + 0.1 * texture + rng.normal(0, 0.05, GRID)
    else:
        raise ValueError(domain)
    image = np.clip(image, 0, None) * 1000.0
    image[~mask] = 0
    return image.astype(np.float32)


def _write(array: np.ndarray, path: str, is_label: bool) -> None:
    img = sitk.GetImageFromArray(np.transpose(array, (2, 1, 0)).astype(np.uint8 if is_label else np.float32))
    img.SetSpacing((SPACING_MM,) * 3)
    sitk.WriteImage(img, path, useCompression=True)


def _dataset(raw: str, dataset_id: int, name: str, overwrite: bool) -> tuple[str, str]:
    final = os.path.join(raw, f"Dataset{dataset_id:03d}_{name}")
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; use --overwrite to regenerate")
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    return final, partial


def _finish(final: str, partial: str, num_training: int, name: str, description: str) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    generate_dataset_json(partial, {0: "MRI"}, LABELS, num_training, ".nii.gz", dataset_name=name,
                          description=description, reference="MNI ICBM152 2009a via nilearn",
                          license="MNI ICBM152 terms (permissive, notice kept); derived synthetic data")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)


def extra_test_stream(seed: int, dataset_index: int) -> np.random.Generator:
    """The random stream of a target's test cases beyond the first ``MAIN_STREAM_TEST_CASES``."""
    return np.random.default_rng([int(seed), 1, int(dataset_index)])


def check_options(dataset_ids: Sequence[int], seed: int, counts: Dict[str, int],
                  oracle_ids: Optional[Sequence[int]]) -> None:
    """Refuse options out of range before anything is written (``ValueError`` naming the option)."""
    ids = list(dataset_ids) + list(oracle_ids or ())
    if len(dataset_ids) != 1 + len(DOMAINS):
        raise ValueError(f"dataset ids: one for the source and one per target domain {DOMAINS}, got "
                         f"{list(dataset_ids)}")
    if oracle_ids is not None and len(oracle_ids) != len(DOMAINS):
        raise ValueError(f"oracle_ids needs one id per target domain {DOMAINS}, got {list(oracle_ids)}")
    bad = [i for i in ids if not (isinstance(i, (int, np.integer)) and 1 <= i <= 999)]
    if bad:
        raise ValueError(f"dataset ids must be integers 1-999 (nnU-Net's DatasetXXX), got {bad}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"dataset ids must be distinct, got {ids}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    unknown = set(counts) - set(DEFAULT_COUNTS)
    if unknown:
        raise ValueError(f"unknown counts {sorted(unknown)}; known: {sorted(DEFAULT_COUNTS)}")
    bad = {k: v for k, v in counts.items() if not (isinstance(v, (int, np.integer)) and v >= 1)}
    if bad:
        raise ValueError(f"counts must be integers >= 1, got {bad}")


def check_extent(image: np.ndarray, case: str) -> None:
    """A case whose foreground is smaller than the smallest patch the presets train on (``MIN_EXTENT`` voxels per
    axis) would leave the sampler nothing but padding: refused, naming the case."""
    nonzero = np.nonzero(image)
    extent = [int(a.max() - a.min() + 1) if a.size else 0 for a in nonzero]
    if min(extent) < MIN_EXTENT:
        raise ValueError(f"{case}: foreground spans {extent} voxels, smaller than the {MIN_EXTENT}-voxel patch of "
                         f"the CPU preset on some axis")


def generate_demo_cohort(raw: str, dataset_ids: Sequence[int] = DEFAULT_IDS, seed: int = 0,
                         counts: Optional[Dict[str, int]] = None, overwrite: bool = False,
                         verbose: bool = True, oracle_ids: Optional[Sequence[int]] = None) -> Dict[str, str]:
    """Write the source and the three targets; returns {role: dataset folder}.

    ``oracle_ids`` (one per target) also writes, for benchmarks only, ``DemoBrainOracle<domain>``: the target's
    training images *with* their labels (imagesTr + labelsTr), to train the target-oracle ceiling. The cohort
    itself is identical with or without it (same random draws).

    Every dataset is written to ``<folder>.partial`` and renamed into place only once all of them are complete:
    an error or an interruption leaves ``raw`` as it was (existing datasets are replaced only at that point)."""
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    check_options(dataset_ids, seed, counts, oracle_ids)
    t0 = time.time()
    templates = load_templates()
    rng = np.random.default_rng(seed)
    written, pending = {}, []
    plan = [("source", dataset_ids[0], "DemoBrainSourceT1w", "labeled T1w source")] + [
        (domain, i, f"DemoBrainTarget{domain}", f"unlabeled {domain} target (test labels for evaluation only)")
        for domain, i in zip(DOMAINS, dataset_ids[1:])]
    try:
        for index, (domain, dataset_id, name, description) in enumerate(plan):
            final, partial = _dataset(raw, dataset_id, name, overwrite)
            pending.append((final, partial, counts["source_train"] if domain == "source" else counts["target_train"],
                            name, description))
            oracle = None
            if oracle_ids is not None and domain != "source":
                oracle_name = f"DemoBrainOracle{domain}"
                oracle = (oracle_name, *_dataset(raw, oracle_ids[index - 1], oracle_name, overwrite))
                pending.append((oracle[1], oracle[2], counts["target_train"], oracle_name,
                                f"benchmark ceiling only: the {domain} target's training images with their labels"))
                for sub in ("imagesTr", "labelsTr"):
                    os.makedirs(os.path.join(oracle[2], sub))
                written[f"oracle_{domain}"] = oracle[1]
            splits = [("imagesTr", "labelsTr", counts["source_train"])] if domain == "source" else \
                [("imagesTr", None, counts["target_train"]), ("imagesTs", "labelsTs", counts["target_test"])]
            extra = extra_test_stream(seed, index)
            for images, labels, n in splits:
                os.makedirs(os.path.join(partial, images))
                if labels:
                    os.makedirs(os.path.join(partial, labels))
                for i in range(n):
                    stream = extra if images == "imagesTs" and i >= MAIN_STREAM_TEST_CASES else rng
                    scale = stream.uniform(0.92, 1.08) * (AGE_SCALE if domain == "Age" else 1.0)
                    warped, label, mask = _subject(templates, stream, scale, domain)
                    case = f"{name}_{images[-2:].lower()}{i:03d}"
                    image = render(domain, warped, mask, stream)
                    check_extent(image, f"{name}/{images}/{case}")
                    _write(image, os.path.join(partial, images, f"{case}_0000.nii.gz"), False)
                    if labels:
                        _write(label, os.path.join(partial, labels, f"{case}.nii.gz"), True)
                    elif oracle is not None:
                        shutil.copy(os.path.join(partial, images, f"{case}_0000.nii.gz"),
                                    os.path.join(oracle[2], "imagesTr"))
                        _write(label, os.path.join(oracle[2], "labelsTr", f"{case}.nii.gz"), True)
            written[domain] = final
            if verbose:
                print(f"{final}: {description} (written; moved into place when the cohort is complete)")
        for final, partial, num_training, name, description in pending:
            _finish(final, partial, num_training, name, description)
    finally:
        for _, partial, *_ in pending:
            shutil.rmtree(partial, ignore_errors=True)
    if verbose:
        print(f"Demo cohort generated in {time.time() - t0:.1f} s")
    return written


def parse_arguments(argv=None) -> argparse.Namespace:
    """The command line, checked (:func:`check_options`) before anything is generated."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", nargs=4, type=int, default=list(DEFAULT_IDS),
                        help="dataset ids: source, T2w target, site target, age target. Default: 951 952 953 954")
    parser.add_argument("--oracle_ids", nargs=3, type=int, default=None,
                        help="benchmarks only: also write labeled copies of the three targets' training sets "
                             "(target-oracle ceiling) under these dataset ids")
    parser.add_argument("-o", default=None, help="output folder. Default: $nnUNet_raw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing demo datasets")
    args = parser.parse_args(argv)
    try:
        check_options(args.d, args.seed, DEFAULT_COUNTS, args.oracle_ids)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv=None) -> None:
    args = parse_arguments(argv)
    raw = args.o
    if raw is None:
        from nnunetv2.paths import nnUNet_raw
        if not nnUNet_raw.is_set():
            raise SystemExit("ERROR: set nnUNet_raw or pass -o")
        raw = os.fspath(nnUNet_raw)
    try:
        generate_demo_cohort(raw, args.d, args.seed, overwrite=args.overwrite, oracle_ids=args.oracle_ids)
    except (ValueError, FileExistsError) as e:
        raise SystemExit(f"ERROR: {e}")


if __name__ == "__main__":
    main()
