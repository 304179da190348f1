"""BCP (Baby Connectome Project, BIDS layout) -> one nnU-Net raw dataset of one modality: a labeled **source**
or an unlabeled **target**, for MAPSeg's infant brain UDA settings.

Input (``-i``, a BIDS root)::

    sub-<ID>/ses-<N>mo/anat/sub-<ID>_ses-<N>mo[_acq-<label>][_run-<NNN>]_T1w.nii.gz   (or _T2w, .nii)

* One scan per session: with several runs (or acquisitions) of the modality, the **lowest run number** is used
  (a file without run counts as run 0; ties are broken by the acq label, no acq first); the others are listed
  in a note. Files of the modality with other BIDS entities (desc-, rec-, ...) are ignored, with a note.
* Sessions without the chosen modality are skipped with a note.
* Age in months comes from the session label ``ses-<N>mo`` or, where given, from ``--ages_tsv`` (BIDS
  ``sessions.tsv`` files or one table with ``participant_id``, ``session_id`` and an age-in-months column);
  the table wins where both exist. ``--min_age_months`` / ``--max_age_months`` keep sessions inside the window
  (inclusive); a session of unknown age is skipped when a window is set.
* Label maps (optional; required for a source and for a target's test split) are FreeSurfer aseg-coded files,
  one per session, found either with ``--labels_root DIR`` (any file named ``sub-<ID>_ses-<S>*<labels_suffix>``
  below DIR; suffix default ``desc-aseg_dseg.nii.gz``; if a session has several, the one naming the modality,
  e.g. ``space-T2w``, is taken, otherwise it is an error) or with ``--labels_glob PATTERN`` (a glob, relative
  to ``-i`` unless absolute, with ``{sub}``, ``{ses}`` and ``{mod}`` filled in, e.g.
  ``derivatives/aseg/sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_space-{mod}_desc-aseg_dseg.nii.gz``). Left and
  right are merged into the paper's 7 subcortical classes: 1 hippocampus (17, 53), 2 amygdala (18, 54),
  3 caudate (11, 50), 4 putamen (12, 51), 5 pallidum (13, 52), 6 thalamus (10, 49), 7 accumbens (26, 58); every
  other code becomes background. Float-stored labels are rounded. A label map must have the image's shape and
  affine; it is written with the image's geometry.

The channel name in dataset.json is ``MRI`` for both modalities unless ``--channel_name`` is given
(``mapseg_register_targets`` requires a target to carry the source's channel name, so a cross-sequence pair
needs one shared name; the modality is in the dataset name and description).

Output ``Dataset{ID}_{NAME}`` (default name ``BCP_{modality}_{role}[_{min}to{max}mo]``), case identifiers
``sub-<ID>_ses-<S>`` (one case per session), images as float32 with the source file's geometry (affine and NIfTI
header; nothing is resampled or reoriented), labels as uint8:

* ``--role source``: imagesTr + labelsTr (sessions without a label map are skipped with a note);
* ``--role target``: imagesTr only (no labelsTr); held-out test subjects (``--test_subjects`` or
  ``--test_fraction``) go to imagesTs + labelsTs, for evaluation only, with their labeled sessions.

Subjects are never split between training and test: all sessions of a test subject go to the test split.
``--test_fraction`` picks ``max(1, round(fraction * subjects))`` test subjects among those with labels, at
random with ``--seed`` (deterministic). A source may also hold out test subjects. ``--subjects`` and
``--exclude_subjects`` restrict the subjects used (e.g. to build disjoint source and target groups); any list
option also reads IDs from a file given as ``@file`` (one ID per line). Each dataset also gets
``conversion_cases.tsv`` (case, split, age, source image and label files). The dataset is written into a hidden
temporary folder and renamed to its final name only once complete; an existing one is replaced only with
``--overwrite``.

Cross-sequence (paper Sec. 4.2: T1w source, T2w target, two disjoint subject groups)::

    python -m mapseg_nnunet.dataset_conversion.DatasetBCP -i /data/BCP -d 701 --modality T1w --role source \\
        --labels_root /data/BCP/derivatives/aseg --subjects @group_a.txt
    python -m mapseg_nnunet.dataset_conversion.DatasetBCP -i /data/BCP -d 702 --modality T2w --role target \\
        --labels_root /data/BCP/derivatives/aseg --subjects @group_b.txt --test_subjects @group_b_test.txt

Cross-age (T2w of 12-24 month-olds as source, T2w of 0-6 month-olds as target)::

    python -m mapseg_nnunet.dataset_conversion.DatasetBCP -i /data/BCP -d 711 --modality T2w --role source \\
        --min_age_months 12 --max_age_months 24 --labels_root /data/BCP/derivatives/aseg
    python -m mapseg_nnunet.dataset_conversion.DatasetBCP -i /data/BCP -d 712 --modality T2w --role target \\
        --max_age_months 6 --labels_root /data/BCP/derivatives/aseg --test_fraction 0.4

(BCP is longitudinal: one subject may appear in both cross-age datasets at different ages; add
``--exclude_subjects`` if that is not wanted.)
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from mapseg_nnunet.dataset_conversion.DatasetMMWHS import (check_same_grid, commit_dataset_folder,
                                                           default_output_dir, integer_labels, load_volume,
                                                           prepare_dataset_folder, save_volume)
from mapseg_nnunet.data.errors import DatasetError

MODALITIES = ("T1w", "T2w")
# paper's 7 subcortical classes; FreeSurfer aseg codes (left, right) merged into one class each
SUBCORTICAL_CLASSES = (
    ("Hippocampus", (17, 53)),
    ("Amygdala", (18, 54)),
    ("Caudate", (11, 50)),
    ("Putamen", (12, 51)),
    ("Pallidum", (13, 52)),
    ("Thalamus", (10, 49)),
    ("Accumbens", (26, 58)),
)
LABELS = {"background": 0, **{name: i + 1 for i, (name, _) in enumerate(SUBCORTICAL_CLASSES)}}
DEFAULT_LABELS_SUFFIX = "desc-aseg_dseg.nii.gz"
AGE_COLUMNS = ("age_months", "age_in_months", "age_mo", "age")
SESSION_AGE = re.compile(r"^(\d+)mo$")
SUB_DIR = re.compile(r"^sub-([A-Za-z0-9]+)$")
SES_DIR = re.compile(r"^ses-([A-Za-z0-9]+)$")


@dataclass
class Session:
    sub: str
    ses: str
    age: Optional[float] = None
    image: Optional[str] = None
    label: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def case(self) -> str:
        return f"sub-{self.sub}_ses-{self.ses}"


def _strip(value: str, prefix: str) -> str:
    value = value.strip()
    return value[len(prefix):] if value.startswith(prefix) else value


# ----------------------------------------------------------------------------------------------- discovery

def _pick_scan(sub: str, ses: str, modality: str, anat: str) -> Tuple[Optional[str], List[str]]:
    """The scan of ``modality`` in one anat folder (lowest run, then acq label) and notes about the others."""
    pattern = re.compile(rf"^sub-{re.escape(sub)}_ses-{re.escape(ses)}(?:_acq-(?P<acq>[A-Za-z0-9]+))?"
                         rf"(?:_run-(?P<run>\d+))?_{modality}\.nii(?:\.gz)?$")
    candidates, ignored = [], []
    for f in sorted(os.listdir(anat)) if os.path.isdir(anat) else []:
        m = pattern.match(f)
        if m:
            candidates.append(((int(m.group("run") or 0), m.group("acq") or "", f), os.path.join(anat, f)))
        elif re.search(rf"_{modality}\.nii(\.gz)?$", f):
            ignored.append(f)
    notes = []
    if ignored:
        notes.append(f"ignored {modality} file(s) with other BIDS entities: {', '.join(ignored)}")
    if not candidates:
        return None, notes
    candidates.sort()
    chosen = candidates[0][1]
    if len(candidates) > 1:
        notes.append(f"{len(candidates)} {modality} scans, using {os.path.basename(chosen)} (lowest run); ignored "
                     f"{', '.join(os.path.basename(p) for _, p in candidates[1:])}")
    return chosen, notes


def read_ages_tsv(paths: Sequence[str], age_column: Optional[str] = None) -> Dict[Tuple[str, str], float]:
    """{(sub, ses): age in months} from BIDS sessions/participants tables (tab-separated)."""
    ages: Dict[Tuple[str, str], float] = {}
    for path in paths:
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
                columns = rows[0].keys() if rows else []
        except OSError as e:
            raise DatasetError(f"{path}: cannot read the ages table ({e})") from e
        file_sub = re.match(r"^sub-([A-Za-z0-9]+)_sessions\.tsv$", os.path.basename(path))
        if "session_id" not in columns:
            raise DatasetError(f"{path}: the ages table needs a session_id column (has: {', '.join(columns)})")
        if "participant_id" not in columns and file_sub is None:
            raise DatasetError(f"{path}: the ages table needs a participant_id column (or a sub-<ID>_sessions.tsv "
                               f"file name)")
        column = age_column or next((c for c in AGE_COLUMNS if c in columns), None)
        if column is None or column not in columns:
            raise DatasetError(f"{path}: no age column ({age_column or ' / '.join(AGE_COLUMNS)}) found; "
                               f"columns: {', '.join(columns)}")
        for row in rows:
            sub = _strip(row["participant_id"], "sub-") if "participant_id" in columns else file_sub.group(1)
            ses = _strip(row["session_id"], "ses-")
            try:
                ages[(sub, ses)] = float(row[column])
            except (TypeError, ValueError):
                continue  # n/a or empty: unknown age
    return ages


def _index_labels_root(root: str, suffix: str) -> Dict[Tuple[str, str], List[str]]:
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: labels folder does not exist")
    index: Dict[Tuple[str, str], List[str]] = {}
    pattern = re.compile(r"^sub-([A-Za-z0-9]+)_ses-([A-Za-z0-9]+)_")
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            m = pattern.match(f)
            if m and f.endswith(suffix):
                index.setdefault((m.group(1), m.group(2)), []).append(os.path.join(folder, f))
    return index


def _choose_label(candidates: List[str], modality: str, session: str) -> Optional[str]:
    if len(candidates) > 1:
        named = [c for c in candidates if modality in os.path.basename(c)]
        if len(named) == 1:
            return named[0]
        raise DatasetError(f"{candidates[0]}: {len(candidates)} label maps match session {session} "
                           f"({', '.join(os.path.basename(c) for c in candidates)}); select one with --labels_glob")
    return candidates[0] if candidates else None


def discover_sessions(input_root: str, modality: str, ages: Dict[Tuple[str, str], float],
                      labels_root: Optional[str] = None, labels_glob: Optional[str] = None,
                      labels_suffix: str = DEFAULT_LABELS_SUFFIX) -> List[Session]:
    """Every ``sub-*/ses-*`` session of the BIDS tree, with its chosen scan of ``modality`` (None if it has none),
    its age in months (None if unknown) and its label map (None if none)."""
    if not os.path.isdir(input_root):
        raise DatasetError(f"{input_root}: input folder does not exist")
    label_index = _index_labels_root(labels_root, labels_suffix) if labels_root else None
    sessions = []
    for sub_dir in sorted(os.listdir(input_root)):
        m_sub = SUB_DIR.match(sub_dir)
        if m_sub is None or not os.path.isdir(os.path.join(input_root, sub_dir)):
            continue
        for ses_dir in sorted(os.listdir(os.path.join(input_root, sub_dir))):
            m_ses = SES_DIR.match(ses_dir)
            if m_ses is None or not os.path.isdir(os.path.join(input_root, sub_dir, ses_dir)):
                continue
            s = Session(m_sub.group(1), m_ses.group(1))
            s.image, s.notes = _pick_scan(s.sub, s.ses, modality, os.path.join(input_root, sub_dir, ses_dir, "anat"))
            label_age = SESSION_AGE.match(s.ses)
            s.age = ages.get((s.sub, s.ses), float(label_age.group(1)) if label_age else None)
            if label_index is not None:
                s.label = _choose_label(label_index.get((s.sub, s.ses), []), modality, s.case)
            elif labels_glob:
                pattern = labels_glob.format(sub=s.sub, ses=s.ses, mod=modality)
                if not os.path.isabs(pattern):
                    pattern = os.path.join(input_root, pattern)
                s.label = _choose_label(sorted(glob.glob(pattern)), modality, s.case)
            sessions.append(s)
    return sessions


# ----------------------------------------------------------------------------------------------- labels

def map_aseg_labels(path: str, data: np.ndarray) -> np.ndarray:
    """FreeSurfer aseg codes -> the 7 subcortical classes (left and right merged), everything else 0."""
    data = integer_labels(path, data)
    out = np.zeros(data.shape, np.uint8)
    for index, (_, codes) in enumerate(SUBCORTICAL_CLASSES):
        out[np.isin(data, codes)] = index + 1
    return out


# ----------------------------------------------------------------------------------------------- conversion

def _age_text(age: Optional[float]) -> str:
    return "unknown" if age is None else f"{age:g}"


def _split_subjects(subjects: List[str], labeled: List[str], test_subjects: Optional[Sequence[str]],
                    test_fraction: float, seed: int) -> List[str]:
    if test_subjects is not None:
        return sorted(set(test_subjects))
    if test_fraction <= 0:
        return []
    n_test = max(1, int(round(test_fraction * len(subjects))))
    if n_test > len(labeled):
        print(f"note: only {len(labeled)} subject(s) have labels; the test split gets {len(labeled)} instead of "
              f"{n_test}")
        n_test = len(labeled)
    return sorted(random.Random(seed).sample(sorted(labeled), n_test))


def convert_bcp(input_root: str, output_dir: str, dataset_id: int, modality: str, role: str,
                name: Optional[str] = None, min_age_months: Optional[float] = None,
                max_age_months: Optional[float] = None, ages_tsv: Sequence[str] = (),
                age_column: Optional[str] = None, labels_root: Optional[str] = None,
                labels_glob: Optional[str] = None, labels_suffix: str = DEFAULT_LABELS_SUFFIX,
                test_fraction: float = 0.0, test_subjects: Optional[Iterable[str]] = None,
                subjects: Optional[Iterable[str]] = None, exclude_subjects: Optional[Iterable[str]] = None,
                seed: int = 0, overwrite: bool = False, verbose: bool = True,
                channel_name: Optional[str] = "MRI") -> str:
    """Convert a BCP BIDS tree into one nnU-Net raw dataset (see the module docstring). ``channel_name``
    (default ``MRI``, shared by T1w and T2w datasets so that they pair). Returns its folder."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    if modality not in MODALITIES:
        raise ValueError(f"modality must be T1w or T2w, got {modality!r}")
    if role not in ("source", "target"):
        raise ValueError(f"role must be source or target, got {role!r}")
    if labels_root and labels_glob:
        raise ValueError("give either --labels_root or --labels_glob, not both")
    if test_subjects is not None and test_fraction:
        raise ValueError("give either --test_subjects or --test_fraction, not both")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if min_age_months is not None and max_age_months is not None and min_age_months > max_age_months:
        raise ValueError(f"min_age_months {min_age_months} > max_age_months {max_age_months}")
    has_labels = bool(labels_root or labels_glob)
    wants_test = test_fraction > 0 or test_subjects is not None
    if role == "source" and not has_labels:
        raise ValueError("a source dataset needs label maps: give --labels_root or --labels_glob")
    if wants_test and not has_labels:
        raise ValueError("a test split needs label maps: give --labels_root or --labels_glob")
    say = print if verbose else (lambda *a, **k: None)

    sessions = discover_sessions(input_root, modality, read_ages_tsv(ages_tsv, age_column) if ages_tsv else {},
                                 labels_root, labels_glob, labels_suffix)
    all_subjects = {s.sub for s in sessions}
    keep = {_strip(x, "sub-") for x in subjects} if subjects is not None else set(all_subjects)
    drop = {_strip(x, "sub-") for x in exclude_subjects} if exclude_subjects is not None else set()
    test_list = None if test_subjects is None else [_strip(x, "sub-") for x in test_subjects]
    unknown = sorted((keep | drop | set(test_list or [])) - all_subjects)
    if unknown:
        raise DatasetError(f"{input_root}: subject(s) {', '.join(unknown)} not found (no sub-<ID>/ses-* folder)")

    window = min_age_months is not None or max_age_months is not None
    selected: List[Session] = []
    for s in sessions:
        if s.sub not in keep or s.sub in drop:
            continue
        if s.image is None:
            for note in s.notes:
                say(f"note: {s.case}: {note}")
            say(f"note: {s.case}: no {modality} image, skipped")
            continue
        if window and s.age is None:
            say(f"note: {s.case}: age unknown (no ses-<N>mo label and no --ages_tsv entry), skipped")
            continue
        if window and ((min_age_months is not None and s.age < min_age_months)
                       or (max_age_months is not None and s.age > max_age_months)):
            say(f"note: {s.case}: age {_age_text(s.age)} months outside "
                f"[{_age_text(min_age_months) if min_age_months is not None else '-'}, "
                f"{_age_text(max_age_months) if max_age_months is not None else '-'}], skipped")
            continue
        if role == "source" and s.label is None:
            say(f"note: {s.case}: no label map, skipped (a source needs labels)")
            continue
        for note in s.notes:
            say(f"note: {s.case}: {note}")
        selected.append(s)

    subjects_sel = sorted({s.sub for s in selected})
    labeled = sorted({s.sub for s in selected if s.label is not None})
    test = _split_subjects(subjects_sel, labeled, test_list, test_fraction, seed)
    for sub in test:
        if sub not in labeled:
            raise DatasetError(f"{os.path.join(input_root, 'sub-' + sub)}: test subject {sub} has no selected "
                               f"session with a label map")
    train_cases = [s for s in selected if s.sub not in test]
    test_cases = []
    for s in selected:
        if s.sub in test:
            if s.label is None:
                say(f"note: {s.case}: test subject without a label map for this session, skipped")
            else:
                test_cases.append(s)
    if not train_cases:
        raise DatasetError(f"{input_root}: no {modality} session left for imagesTr (role {role}, ages "
                           f"[{_age_text(min_age_months)}, {_age_text(max_age_months)}], "
                           f"{len(test)} test subject(s))")

    if name is None:
        name = f"BCP_{modality}_{role}"
        if window:
            name += f"_{_age_text(min_age_months if min_age_months is not None else 0)}to" \
                    f"{_age_text(max_age_months) if max_age_months is not None else 'max'}mo"
    final, temporary = prepare_dataset_folder(output_dir, dataset_id, name, overwrite)
    try:
        rows = []
        splits = [("imagesTr", "labelsTr" if role == "source" else None, train_cases, "train")]
        if test_cases:
            splits.append(("imagesTs", "labelsTs", test_cases, "test"))
        for images, labels, cases, split in splits:
            os.makedirs(os.path.join(temporary, images))
            if labels:
                os.makedirs(os.path.join(temporary, labels))
            for s in cases:
                img, data = load_volume(s.image)
                data = data.astype(np.float32)
                if labels:
                    lab_img, lab_data = load_volume(s.label)
                    check_same_grid(s.image, img, data, s.label, lab_img, lab_data)
                    mapped = map_aseg_labels(s.label, lab_data)
                    if not mapped.any():
                        say(f"warning: {s.label}: none of the subcortical aseg codes is present; the label map "
                            f"is all background (is it an aseg?)")
                save_volume(data, img, os.path.join(temporary, images, f"{s.case}_0000.nii.gz"))
                if labels:
                    save_volume(mapped, img, os.path.join(temporary, labels, f"{s.case}.nii.gz"))
                rows.append((s.case, split, _age_text(s.age), s.image, s.label if labels else ""))
        with open(os.path.join(temporary, "conversion_cases.tsv"), "w") as f:
            f.write("case\tsplit\tage_months\timage\tlabel\n")
            f.writelines("\t".join(r) + "\n" for r in rows)
        ages_text = (f"ages {_age_text(min_age_months) if min_age_months is not None else 'any'} to "
                     f"{_age_text(max_age_months) if max_age_months is not None else 'any'} months" if window
                     else "all ages")
        description = (f"BCP {modality}, {role} dataset, {ages_text}. {len(train_cases)} training case(s) "
                       f"{'with labelsTr' if role == 'source' else 'without labels'} from "
                       f"{len({s.sub for s in train_cases})} subject(s); {len(test_cases)} test case(s) from "
                       f"{len(test)} held-out subject(s){' (evaluation only)' if role == 'target' else ''}. "
                       f"Labels: FreeSurfer aseg codes merged left/right into 7 subcortical classes.")
        generate_dataset_json(temporary, {0: channel_name or modality}, dict(LABELS), len(train_cases), ".nii.gz",
                              dataset_name=name, description=description,
                              reference="Howell et al., NeuroImage 2019 (UNC/UMN Baby Connectome Project)",
                              license="BCP / NDA data use terms",
                              converted_by="mapseg_nnunet.dataset_conversion.DatasetBCP",
                              mapseg_role=role, test_subjects=[f"sub-{t}" for t in test])
        commit_dataset_folder(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    say(f"{final}: {role}, {modality}, {len(train_cases)} training and {len(test_cases)} test case(s)")
    return final


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     fromfile_prefix_chars="@")
    parser.add_argument("-i", required=True, help="BIDS root holding sub-*/ses-*/anat/")
    parser.add_argument("-d", type=int, required=True, help="dataset id")
    parser.add_argument("-o", default=None, help="output folder. Default: $nnUNet_raw")
    parser.add_argument("-n", "--name", default=None,
                        help="dataset name. Default: BCP_{modality}_{role}[_{min}to{max}mo]")
    parser.add_argument("--modality", choices=MODALITIES, required=True,
                        help="T1w or T2w; one scan per session: the lowest run number (then acq label) is used")
    parser.add_argument("--role", choices=("source", "target"), required=True,
                        help="source: imagesTr + labelsTr; target: imagesTr without labels (test labels only in "
                             "labelsTs)")
    parser.add_argument("--min_age_months", type=float, default=None, help="keep sessions aged >= this (inclusive)")
    parser.add_argument("--max_age_months", type=float, default=None, help="keep sessions aged <= this (inclusive)")
    parser.add_argument("--ages_tsv", nargs="+", default=(),
                        help="BIDS sessions.tsv file(s) or a table with participant_id, session_id and an age in "
                             "months; overrides ses-<N>mo labels")
    parser.add_argument("--age_column", default=None,
                        help=f"age column of --ages_tsv (months). Default: first of {', '.join(AGE_COLUMNS)}")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels_root", default=None,
                        help="folder searched for sub-<ID>_ses-<S>*<labels_suffix> label maps (FreeSurfer aseg)")
    labels.add_argument("--labels_glob", default=None,
                        help="glob per session with {sub}, {ses}, {mod}, relative to -i unless absolute")
    parser.add_argument("--labels_suffix", default=DEFAULT_LABELS_SUFFIX,
                        help=f"label file ending for --labels_root. Default: {DEFAULT_LABELS_SUFFIX}")
    test = parser.add_mutually_exclusive_group()
    test.add_argument("--test_fraction", type=float, default=0.0,
                      help="fraction of subjects held out for imagesTs/labelsTs (chosen among labeled subjects "
                           "with --seed). Default: 0")
    test.add_argument("--test_subjects", nargs="+", default=None, help="explicit held-out subject IDs (or @file)")
    parser.add_argument("--subjects", nargs="+", default=None, help="use only these subject IDs (or @file)")
    parser.add_argument("--exclude_subjects", nargs="+", default=None, help="leave out these subject IDs (or @file)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --test_fraction draw. Default: 0")
    parser.add_argument("--channel_name", default="MRI",
                        help="channel name in dataset.json. Default: the modality (T1w / T2w); "
                             "mapseg_register_targets requires a target to have the source's channel name")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    args = parser.parse_args(argv)
    out = args.o if args.o is not None else default_output_dir()
    try:
        convert_bcp(args.i, out, args.d, args.modality, args.role, name=args.name,
                    min_age_months=args.min_age_months, max_age_months=args.max_age_months, ages_tsv=args.ages_tsv,
                    age_column=args.age_column, labels_root=args.labels_root, labels_glob=args.labels_glob,
                    labels_suffix=args.labels_suffix, test_fraction=args.test_fraction,
                    test_subjects=args.test_subjects, subjects=args.subjects,
                    exclude_subjects=args.exclude_subjects, seed=args.seed, overwrite=args.overwrite,
                    channel_name=args.channel_name)
    except (DatasetError, FileExistsError, ValueError) as e:
        raise SystemExit(f"ERROR: {e}")


if __name__ == "__main__":
    main()
