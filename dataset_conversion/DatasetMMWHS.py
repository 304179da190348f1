"""MM-WHS 2017 (Multi-Modality Whole Heart Segmentation) -> two nnU-Net raw datasets for cross-modality UDA:
a labeled **source** and an unlabeled **target**.

Input: the 20 labeled training scans per modality, found anywhere under ``-i`` by their file names
(``ct_train_1001_image.nii.gz``, ``ct_train_1001_label.nii.gz``, ... ``mr_train_1020_label.nii.gz``; ``.nii``
works too). Folder names do not matter (``ct_train/``, ``CT/train/``, ``MR/imagesTr`` + ``labelsTr`` ...).

Split (fixed, the UDA protocol of SIFA / PnP-AdaNet, also used by MAPSeg): test scans CT 1003, 1008, 1014, 1019
and MR 1007, 1009, 1018, 1019 (``TEST_IDS``); the other 16 scans per modality are for training. It is used for
``--classes 4`` and ``--classes 7`` alike.

Output (``--direction ct2mr``: CT is the source, MR the target; ``mr2ct`` the reverse):

* ``Dataset{SOURCE_ID}_MMWHS_{CT|MR}_source_{4|7}cls``: imagesTr + labelsTr (16 training scans of the source
  modality) and imagesTs + labelsTs (its 4 test scans, usable for validation);
* ``Dataset{TARGET_ID}_MMWHS_{MR|CT}_target_{4|7}cls``: imagesTr (16 training scans of the target modality, no
  labelsTr: the target is unlabeled) and imagesTs + labelsTs (its 4 test scans, for evaluation only).

Case identifiers are ``ct_1001`` / ``mr_1007``. Both datasets get one shared channel name, ``image`` by default
(``--channel_name NAME`` to choose another), which ``mapseg_register_targets`` requires of a source/target pair;
a name ``CT`` would also make MAPSeg shift the already shifted CT again. Both datasets share one ``labels``
dict:

* ``--classes 4``: 1 MYO (205), 2 LAC (420), 3 LVC (500), 4 AA (820); RA, RV and PA become background;
* ``--classes 7``: 1 MYO (205), 2 LA (420), 3 LV (500), 4 RA (550), 5 RV (600), 6 AA (820), 7 PA (850).

Label quirks handled: labels stored as float are rounded; the stray value 421 (a known MR label bug) is read as
420; any other value stops the conversion with an error naming the file. Intensities: CT gets +1024 HU and
negative values are set to 0 (the MAPSeg author's recipe); MR is copied unchanged (N4 bias-field correction,
which the paper applies to MR, is not done here). Images are written as float32, labels as uint8, with the
geometry (affine, NIfTI header) of the source image; nothing is resampled or reoriented.

Both datasets are written into hidden temporary folders next to their final place and renamed only once both
are complete; an existing dataset folder is replaced only with ``--overwrite``.

    python -m mapseg_nnunet.dataset_conversion.DatasetMMWHS -i /data/MMWHS -d 801 802 --direction ct2mr --classes 4
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np

from mapseg_nnunet.data.errors import DatasetError

MODALITIES = ("ct", "mr")
ALL_IDS = tuple(range(1001, 1021))
TEST_IDS = {"ct": (1003, 1008, 1014, 1019), "mr": (1007, 1009, 1018, 1019)}
TRAIN_IDS = {m: tuple(i for i in ALL_IDS if i not in TEST_IDS[m]) for m in MODALITIES}
CHANNEL_NAMES = {"ct": "CT", "mr": "MRI"}

# MM-WHS label values; 421 is a known stray value in MR labels and means 420 (left atrium)
MMWHS_CODES = {"MYO": 205, "LA": 420, "LV": 500, "RA": 550, "RV": 600, "AA": 820, "PA": 850}
STRAY_CODES = {421: 420}
ALLOWED_CODES = {0, *MMWHS_CODES.values(), *STRAY_CODES}

CLASS_DEFINITIONS = {
    # class name -> MM-WHS code, in class-index order (index 0 is background)
    4: (("MYO", 205), ("LAC", 420), ("LVC", 500), ("AA", 820)),
    7: (("MYO", 205), ("LA", 420), ("LV", 500), ("RA", 550), ("RV", 600), ("AA", 820), ("PA", 850)),
}
CT_SHIFT = 1024.0
FILE_PATTERN = re.compile(r"^(ct|mr)_train_(10\d\d)_(image|label)\.nii(\.gz)?$", re.IGNORECASE)


def labels_dict(classes: int) -> Dict[str, int]:
    return {"background": 0, **{name: i + 1 for i, (name, _) in enumerate(CLASS_DEFINITIONS[classes])}}


# ----------------------------------------------------------------------------------------------- file handling

def find_mmwhs_files(root: str) -> Dict[Tuple[str, int, str], str]:
    """{(modality, scan id, 'image'|'label'): path} for every ``{ct,mr}_train_10NN_{image,label}`` file below
    ``root``; the same stem found twice is an error."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: input folder does not exist")
    found: Dict[Tuple[str, int, str], str] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            m = FILE_PATTERN.match(f)
            if m is None:
                continue
            key = (m.group(1).lower(), int(m.group(2)), m.group(3).lower())
            path = os.path.join(folder, f)
            if key in found:
                raise DatasetError(f"{path}: duplicate of {found[key]} (same scan and kind); keep only one copy")
            found[key] = path
    return found


def load_volume(path: str) -> Tuple[nib.Nifti1Image, np.ndarray]:
    """The image object (for its geometry) and its voxels as stored (scaling applied), 3D."""
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj)
    except Exception as e:  # unreadable, truncated or not a NIfTI file
        raise DatasetError(f"{path}: cannot read the file ({type(e).__name__}: {e})") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D volume, got shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise DatasetError(f"{path}: contains {int(np.sum(~np.isfinite(data)))} NaN or infinite voxel(s)")
    return img, data


def save_volume(data: np.ndarray, reference: nib.Nifti1Image, path: str) -> None:
    """Write ``data`` with the affine and header geometry of ``reference`` (no resampling, no reorientation)."""
    header = nib.Nifti1Header.from_header(reference.header)
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"] = 0
    header["cal_max"] = 0
    nib.save(nib.Nifti1Image(data, reference.affine, header), path)


def check_same_grid(image_path: str, image: nib.Nifti1Image, image_data: np.ndarray, label_path: str,
                    label: nib.Nifti1Image, label_data: np.ndarray) -> None:
    if image_data.shape != label_data.shape:
        raise DatasetError(f"{label_path}: label shape {label_data.shape} does not match image shape "
                           f"{image_data.shape} of {image_path}")
    if not np.allclose(image.affine, label.affine, atol=1e-3):
        raise DatasetError(f"{label_path}: label geometry (affine)\n{np.round(label.affine, 4)}\ndoes not match "
                           f"the image {image_path}\n{np.round(image.affine, 4)}")


def integer_labels(path: str, data: np.ndarray) -> np.ndarray:
    """Labels as int64; float-stored labels are rounded."""
    if np.issubdtype(data.dtype, np.floating):
        data = np.rint(data)
    return data.astype(np.int64, copy=False)


def present_values(data: np.ndarray) -> np.ndarray:
    if data.size and data.min() >= 0 and data.max() < 2 ** 16:
        return np.nonzero(np.bincount(data.ravel()))[0]
    return np.unique(data)


def map_mmwhs_labels(path: str, data: np.ndarray, classes: int) -> Tuple[np.ndarray, List[int]]:
    """MM-WHS codes -> class indices for ``classes`` (4 or 7). Returns the mapped labels and the stray codes that
    were remapped (e.g. [421])."""
    data = integer_labels(path, data)
    values = set(int(v) for v in present_values(data))
    unexpected = sorted(values - ALLOWED_CODES)
    if unexpected:
        shown = ", ".join(str(v) for v in unexpected[:10]) + (" ..." if len(unexpected) > 10 else "")
        raise DatasetError(f"{path}: unexpected label value(s) {shown}; MM-WHS labels are 0 (background), "
                           f"205, 420 (421), 500, 550, 600, 820, 850")
    stray = sorted(v for v in values if v in STRAY_CODES)
    for bad, good in STRAY_CODES.items():
        if bad in values:
            data = np.where(data == bad, good, data)
    out = np.zeros(data.shape, np.uint8)
    for index, (_, code) in enumerate(CLASS_DEFINITIONS[classes]):
        out[data == code] = index + 1
    return out, stray


def convert_image(modality: str, path: str) -> Tuple[nib.Nifti1Image, np.ndarray]:
    img, data = load_volume(path)
    data = data.astype(np.float32)
    if modality == "ct":
        data = np.maximum(data + np.float32(CT_SHIFT), np.float32(0))
    return img, data


# ----------------------------------------------------------------------------------------------- output folders

def prepare_dataset_folder(out_dir: str, dataset_id: int, name: str, overwrite: bool) -> Tuple[str, str]:
    """Check the final name is free (or may be replaced) and create a hidden temporary sibling folder, which
    nnU-Net does not see (its dataset lookup only matches ``DatasetXXX_*``). Returns (final, temporary)."""
    if not 0 < dataset_id < 1000:
        raise ValueError(f"dataset id must be in 1..999, got {dataset_id}")
    final_name = f"Dataset{dataset_id:03d}_{name}"
    final = os.path.join(out_dir, final_name)
    os.makedirs(out_dir, exist_ok=True)
    clash = [d for d in os.listdir(out_dir) if d.startswith(f"Dataset{dataset_id:03d}_") and d != final_name]
    if clash:
        raise FileExistsError(f"{os.path.join(out_dir, clash[0])}: dataset id {dataset_id} is already used by "
                              f"another dataset; pick another id or remove it")
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; use --overwrite to replace it")
    return final, tempfile.mkdtemp(prefix=f".{final_name}.", suffix=".partial", dir=out_dir)


def commit_dataset_folder(temporary: str, final: str) -> None:
    """Move the complete temporary folder to ``final``; an existing ``final`` is removed only afterwards."""
    old = None
    if os.path.exists(final):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.", suffix=".old", dir=os.path.dirname(final))
        os.rmdir(old)
        os.replace(final, old)
    os.replace(temporary, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- conversion

def _write_split(files: Dict[Tuple[str, int, str], str], folder: str, modality: str, ids: Sequence[int],
                 images: str, labels: Optional[str], classes: int, verbose: bool) -> None:
    os.makedirs(os.path.join(folder, images), exist_ok=True)
    if labels:
        os.makedirs(os.path.join(folder, labels), exist_ok=True)
    for scan in ids:
        case = f"{modality}_{scan}"
        image_path = files[(modality, scan, "image")]
        img, data = convert_image(modality, image_path)
        if labels:
            label_path = files[(modality, scan, "label")]
            lab_img, lab_data = load_volume(label_path)
            check_same_grid(image_path, img, data, label_path, lab_img, lab_data)
            mapped, stray = map_mmwhs_labels(label_path, lab_data, classes)
            if stray and verbose:
                print(f"note: {label_path}: stray label value(s) {stray} read as "
                      f"{[STRAY_CODES[s] for s in stray]} (known MM-WHS label bug)")
        save_volume(data, img, os.path.join(folder, images, f"{case}_0000.nii.gz"))
        if labels:
            save_volume(mapped, img, os.path.join(folder, labels, f"{case}.nii.gz"))


def convert_mmwhs(input_root: str, output_dir: str, source_id: int, target_id: int, direction: str = "ct2mr",
                  classes: int = 4, overwrite: bool = False, verbose: bool = True,
                  channel_name: Optional[str] = "image") -> Dict[str, str]:
    """Convert MM-WHS 2017 into a labeled source and an unlabeled target dataset (see the module docstring).
    ``channel_name`` is the channel name shared by both datasets.
    Returns {'source': folder, 'target': folder}."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    if direction not in ("ct2mr", "mr2ct"):
        raise ValueError(f"direction must be ct2mr or mr2ct, got {direction!r}")
    if classes not in CLASS_DEFINITIONS:
        raise ValueError(f"classes must be 4 or 7, got {classes}")
    if source_id == target_id:
        raise ValueError(f"source and target need two different dataset ids, got {source_id} twice")
    source_mod, target_mod = ("ct", "mr") if direction == "ct2mr" else ("mr", "ct")

    files = find_mmwhs_files(input_root)
    needed = [(source_mod, i, kind) for i in ALL_IDS for kind in ("image", "label")]
    needed += [(target_mod, i, "image") for i in ALL_IDS] + [(target_mod, i, "label") for i in TEST_IDS[target_mod]]
    missing = [f"{m}_train_{i}_{kind}" for m, i, kind in needed if (m, i, kind) not in files]
    if missing:
        raise DatasetError(f"{input_root}: {len(missing)} MM-WHS file(s) not found: {', '.join(missing[:8])}"
                           f"{' ...' if len(missing) > 8 else ''}")

    plan = [("source", source_mod, source_id), ("target", target_mod, target_id)]
    folders = {}
    for role, modality, dataset_id in plan:
        name = f"MMWHS_{modality.upper()}_{role}_{classes}cls"
        folders[role] = (*prepare_dataset_folder(output_dir, dataset_id, name, overwrite), name, modality)
    try:
        for role, modality, dataset_id in plan:
            final, temporary, name, _ = folders[role]
            train_labels = "labelsTr" if role == "source" else None
            _write_split(files, temporary, modality, TRAIN_IDS[modality], "imagesTr", train_labels, classes, verbose)
            _write_split(files, temporary, modality, TEST_IDS[modality], "imagesTs", "labelsTs", classes, verbose)
            other = target_mod if role == "source" else source_mod
            description = (f"MM-WHS 2017 {modality.upper()}, {role} of {direction} UDA ({classes} classes). "
                           f"imagesTr: scans {', '.join(map(str, TRAIN_IDS[modality]))}"
                           f"{' with labelsTr' if role == 'source' else ' (unlabeled: no labelsTr)'}; "
                           f"imagesTs/labelsTs: test scans {', '.join(map(str, TEST_IDS[modality]))}"
                           f"{' (evaluation only)' if role == 'target' else ''}. "
                           f"{'CT: +1024 HU, negatives set to 0. ' if modality == 'ct' else ''}"
                           f"Paired with the {other.upper()} {'target' if role == 'source' else 'source'} dataset.")
            generate_dataset_json(temporary, {0: channel_name or CHANNEL_NAMES[modality]}, labels_dict(classes),
                                  len(TRAIN_IDS[modality]), ".nii.gz", dataset_name=name, description=description,
                                  reference="Zhuang & Shen, MedIA 2016; Zhuang et al., MedIA 2019 (MM-WHS 2017)",
                                  license="MM-WHS 2017 challenge data terms",
                                  converted_by="mapseg_nnunet.dataset_conversion.DatasetMMWHS",
                                  mapseg_role=role, mapseg_direction=direction,
                                  test_cases=[f"{modality}_{i}" for i in TEST_IDS[modality]])
        for role in ("source", "target"):
            final, temporary, _, _ = folders[role]
            commit_dataset_folder(temporary, final)
            if verbose:
                print(f"{final}: {role} ({folders[role][3].upper()}, {classes} classes)")
    finally:
        for final, temporary, _, _ in folders.values():
            shutil.rmtree(temporary, ignore_errors=True)
    return {role: entry[0] for role, entry in folders.items()}


def default_output_dir() -> str:
    from nnunetv2.paths import nnUNet_raw
    if not nnUNet_raw.is_set():
        raise SystemExit("ERROR: nnUNet_raw is not set; set it or pass -o OUTPUT_FOLDER")
    return os.fspath(nnUNet_raw)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", required=True, help="MM-WHS folder; the {ct,mr}_train_10NN_{image,label} files are "
                                                  "found anywhere below it")
    parser.add_argument("-d", nargs=2, type=int, metavar=("SOURCE_ID", "TARGET_ID"), default=None,
                        help="dataset ids of the labeled source and the unlabeled target")
    parser.add_argument("-ds", type=int, default=None, help="source dataset id (alternative to -d)")
    parser.add_argument("-dt", type=int, default=None, help="target dataset id (alternative to -d)")
    parser.add_argument("-o", default=None, help="output folder. Default: $nnUNet_raw")
    parser.add_argument("--direction", choices=("ct2mr", "mr2ct"), default="ct2mr",
                        help="ct2mr: CT source, MR target (the paper's setting); mr2ct: the reverse. Default: ct2mr")
    parser.add_argument("--classes", type=int, choices=(4, 7), default=4,
                        help="4: MYO, LAC, LVC, AA (UDA protocol of prior work); 7: all MM-WHS structures. "
                             "Default: 4")
    parser.add_argument("--channel_name", default="image",
                        help="one channel name for both datasets instead of CT / MRI (mapseg_register_targets "
                             "requires a target to have the source's channel names)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing dataset folders")
    args = parser.parse_args(argv)
    if args.d is not None and (args.ds is not None or args.dt is not None):
        parser.error("use either -d SOURCE_ID TARGET_ID or -ds/-dt, not both")
    ids = args.d if args.d is not None else [args.ds, args.dt]
    if None in ids:
        parser.error("dataset ids are required: -d SOURCE_ID TARGET_ID (or -ds SOURCE_ID -dt TARGET_ID)")
    out = args.o if args.o is not None else default_output_dir()
    try:
        convert_mmwhs(args.i, out, ids[0], ids[1], args.direction, args.classes, args.overwrite,
                      channel_name=args.channel_name)
    except (DatasetError, FileExistsError, ValueError) as e:
        raise SystemExit(f"ERROR: {e}")


if __name__ == "__main__":
    main()
