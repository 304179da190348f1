"""Dataset converters (MM-WHS 2017, BCP) on tiny fake trees that use the real file names."""
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mapseg_nnunet.dataset_conversion import DatasetBCP, DatasetMMWHS
from mapseg_nnunet.data.errors import DatasetError

SHAPE = (12, 12, 8)
# rotated axes, anisotropic spacing, non-zero origin: geometry must survive the conversion
AFFINE = np.array([[0.0, -0.8, 0.0, 10.0],
                   [0.9, 0.0, 0.0, -5.0],
                   [0.0, 0.0, 1.5, 3.0],
                   [0.0, 0.0, 0.0, 1.0]])


def _save(arr, path, affine=AFFINE):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), path)


def _load(path):
    return np.asarray(nib.load(path).dataobj)


def _json(folder):
    with open(os.path.join(folder, "dataset.json")) as f:
        return json.load(f)


def _cases(folder, sub, image=True):
    path = os.path.join(folder, sub)
    suffix = "_0000.nii.gz" if image else ".nii.gz"
    assert all(f.endswith(suffix) for f in os.listdir(path)), os.listdir(path)
    return sorted(f[:-len(suffix)] for f in os.listdir(path))


def _assert_same_geometry(converted, original):
    a, b = sitk.ReadImage(converted), sitk.ReadImage(original)
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(nib.load(converted).affine, nib.load(original).affine, atol=1e-5)


# ================================================================================================== MM-WHS

MMWHS_CODES = (0, 205, 420, 500, 550, 600, 820, 850)
MAP4 = {205: 1, 420: 2, 421: 2, 500: 3, 820: 4}
MAP7 = {205: 1, 420: 2, 421: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7}


def _mmwhs_paths(root, modality, scan):
    if modality == "ct":  # official layout
        return (os.path.join(root, "ct_train", f"ct_train_{scan}_image.nii.gz"),
                os.path.join(root, "ct_train", f"ct_train_{scan}_label.nii.gz"))
    # a redistribution layout: the folder names must not matter; one image uncompressed
    ext = ".nii" if scan == 1005 else ".nii.gz"
    return (os.path.join(root, "MR", "imagesTr", f"mr_train_{scan}_image{ext}"),
            os.path.join(root, "MR", "labelsTr", f"mr_train_{scan}_label.nii.gz"))


def _mmwhs_label(modality, scan):
    label = np.zeros(SHAPE, np.int16)
    for k, code in enumerate(MMWHS_CODES):
        label.flat[k * 100:(k + 1) * 100] = code
    if modality == "mr" and scan in (1001, 1007):
        label.flat[1000:1010] = 421  # the known MR label bug
    if modality == "mr" and scan == 1002:  # stored as float, slightly off integers
        return label.astype(np.float32) + np.float32(0.3) * np.sign(np.sin(np.arange(label.size))).reshape(SHAPE)
    return label


def _mmwhs_image(modality, scan):
    if modality == "ct":
        return (np.linspace(-2000, 1000, int(np.prod(SHAPE))).reshape(SHAPE) + scan - 1000).astype(np.int16)
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 0.5 + scan).astype(np.float32)


@pytest.fixture(scope="module")
def mmwhs_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mmwhs_in"))
    for modality in ("ct", "mr"):
        for scan in range(1001, 1021):
            image_path, label_path = _mmwhs_paths(root, modality, scan)
            _save(_mmwhs_image(modality, scan), image_path)
            _save(_mmwhs_label(modality, scan), label_path)
    # files that must be ignored: official test scans without labels, and other names
    _save(_mmwhs_image("ct", 2001), os.path.join(root, "ct_test", "ct_test_2001_image.nii.gz"))
    _save(_mmwhs_image("ct", 1001), os.path.join(root, "other", "ct_train_1001_image_backup.nii.gz"))
    return root


@pytest.fixture(scope="module")
def ct2mr(mmwhs_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mmwhs_out"))
    folders = DatasetMMWHS.convert_mmwhs(mmwhs_root, out, 801, 802, "ct2mr", classes=4, verbose=False)
    return out, folders


def test_mmwhs_ct2mr_4class_layout_and_json(ct2mr):
    out, folders = ct2mr
    assert sorted(os.listdir(out)) == ["Dataset801_MMWHS_CT_source_4cls", "Dataset802_MMWHS_MR_target_4cls"]
    assert folders == {"source": os.path.join(out, "Dataset801_MMWHS_CT_source_4cls"),
                       "target": os.path.join(out, "Dataset802_MMWHS_MR_target_4cls")}
    src, tgt = folders["source"], folders["target"]
    ct_test, mr_test = [1003, 1008, 1014, 1019], [1007, 1009, 1018, 1019]
    ct_train = [f"ct_{i}" for i in range(1001, 1021) if i not in ct_test]
    mr_train = [f"mr_{i}" for i in range(1001, 1021) if i not in mr_test]
    assert len(ct_train) == len(mr_train) == 16
    assert _cases(src, "imagesTr") == ct_train and _cases(src, "labelsTr", image=False) == ct_train
    assert _cases(src, "imagesTs") == [f"ct_{i}" for i in ct_test]
    assert _cases(src, "labelsTs", image=False) == [f"ct_{i}" for i in ct_test]
    assert _cases(tgt, "imagesTr") == mr_train
    assert not os.path.exists(os.path.join(tgt, "labelsTr")), "the target must be unlabeled"
    assert _cases(tgt, "imagesTs") == [f"mr_{i}" for i in mr_test]
    assert _cases(tgt, "labelsTs", image=False) == [f"mr_{i}" for i in mr_test]
    labels4 = {"background": 0, "MYO": 1, "LAC": 2, "LVC": 3, "AA": 4}
    for folder, channel in ((src, "image"), (tgt, "image")):
        js = _json(folder)
        assert js["channel_names"] == {"0": channel}
        assert js["labels"] == labels4
        assert js["numTraining"] == 16 and js["file_ending"] == ".nii.gz"


def test_mmwhs_4class_labels_ct_shift_and_geometry(ct2mr, mmwhs_root):
    _, folders = ct2mr
    src, tgt = folders["source"], folders["target"]
    # source training label: only MYO, LAC, LVC, AA survive; RA, RV, PA become background
    label = _load(os.path.join(src, "labelsTr", "ct_1001.nii.gz"))
    assert label.dtype == np.uint8
    raw = _mmwhs_label("ct", 1001)
    expected = np.vectorize(lambda v: MAP4.get(int(v), 0))(raw)
    np.testing.assert_array_equal(label, expected)
    assert set(np.unique(label)) == {0, 1, 2, 3, 4}
    # target test label of mr_1007 holds the stray 421, read as LAC (2)
    mr_label = _load(os.path.join(tgt, "labelsTs", "mr_1007.nii.gz"))
    assert (mr_label.flat[1000:1010] == 2).all()
    np.testing.assert_array_equal(mr_label, np.vectorize(lambda v: MAP4.get(int(v), 0))(_mmwhs_label("mr", 1007)))
    # CT: +1024 HU, negatives to 0, float32
    ct = nib.load(os.path.join(src, "imagesTr", "ct_1002_0000.nii.gz"))
    assert ct.get_data_dtype() == np.float32
    expected_ct = np.maximum(_mmwhs_image("ct", 1002).astype(np.float32) + 1024, 0)
    np.testing.assert_allclose(np.asarray(ct.dataobj), expected_ct)
    assert np.asarray(ct.dataobj).min() == 0 and (expected_ct == 0).sum() > 100
    # MR intensities unchanged (also the uncompressed .nii input)
    np.testing.assert_allclose(_load(os.path.join(tgt, "imagesTr", "mr_1005_0000.nii.gz")), _mmwhs_image("mr", 1005))
    image_in, label_in = _mmwhs_paths(mmwhs_root, "ct", 1001)
    _assert_same_geometry(os.path.join(src, "imagesTr", "ct_1001_0000.nii.gz"), image_in)
    _assert_same_geometry(os.path.join(src, "labelsTr", "ct_1001.nii.gz"), label_in)
    _assert_same_geometry(os.path.join(tgt, "imagesTs", "mr_1019_0000.nii.gz"),
                          _mmwhs_paths(mmwhs_root, "mr", 1019)[0])


def test_mmwhs_mr2ct_7class_via_cli(mmwhs_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    DatasetMMWHS.main(["-i", mmwhs_root, "-d", "5", "6", "-o", out, "--classes", "7", "--direction", "mr2ct"])
    src = os.path.join(out, "Dataset005_MMWHS_MR_source_7cls")
    tgt = os.path.join(out, "Dataset006_MMWHS_CT_target_7cls")
    assert sorted(os.listdir(out)) == [os.path.basename(src), os.path.basename(tgt)]
    assert _json(src)["labels"] == {"background": 0, "MYO": 1, "LA": 2, "LV": 3, "RA": 4, "RV": 5, "AA": 6, "PA": 7}
    assert _json(tgt)["labels"] == _json(src)["labels"]
    assert _json(src)["channel_names"] == _json(tgt)["channel_names"] == {"0": "image"}  # a registrable pair
    assert "mr_1007" not in _cases(src, "imagesTr") and len(_cases(src, "labelsTr", image=False)) == 16
    assert _cases(tgt, "imagesTs") == ["ct_1003", "ct_1008", "ct_1014", "ct_1019"]
    assert not os.path.exists(os.path.join(tgt, "labelsTr"))
    for scan in (1001, 1002):  # 421 -> LA; the float-stored label is rounded
        label = _load(os.path.join(src, "labelsTr", f"mr_{scan}.nii.gz"))
        raw = np.rint(_mmwhs_label("mr", scan)).astype(int)
        np.testing.assert_array_equal(label, np.vectorize(lambda v: MAP7.get(int(v), 0))(raw))
        assert set(np.unique(label)) == set(range(8))
    assert "stray label value(s) [421]" in capsys.readouterr().out
    # the CT target is shifted as well
    np.testing.assert_allclose(_load(os.path.join(tgt, "imagesTr", "ct_1001_0000.nii.gz")),
                               np.maximum(_mmwhs_image("ct", 1001).astype(np.float32) + 1024, 0))


@pytest.mark.parametrize("problem", ["label_value", "shape", "geometry", "nan", "unreadable", "missing"])
def test_mmwhs_errors_name_the_file_and_leave_nothing(mmwhs_root, tmp_path, problem):
    root = str(tmp_path / "in")
    shutil.copytree(mmwhs_root, root)
    # the broken files are converted last (target, test split) so that partial folders exist at failure time
    image_1019, label_1019 = _mmwhs_paths(root, "mr", 1019)
    if problem == "label_value":
        label = _mmwhs_label("mr", 1019)
        label.flat[5] = 300
        _save(label, label_1019)
        culprit, words = label_1019, "unexpected label value(s) 300"
    elif problem == "shape":
        _save(_mmwhs_label("mr", 1019)[:, :, :7], label_1019)
        culprit, words = label_1019, "shape"
    elif problem == "geometry":  # same grid size, but shifted by 5 mm
        _save(_mmwhs_label("mr", 1019), label_1019, AFFINE + np.array([[0, 0, 0, 5.0]] + [[0] * 4] * 3))
        culprit, words = label_1019, "geometry"
    elif problem == "nan":
        image = _mmwhs_image("mr", 1019)
        image[3, 3, 3] = np.nan
        _save(image, image_1019)
        culprit, words = image_1019, "NaN"
    elif problem == "unreadable":
        with open(image_1019, "wb") as f:
            f.write(b"not a nifti file at all")
        culprit, words = image_1019, "cannot read"
    else:
        os.remove(_mmwhs_paths(root, "ct", 1005)[1])
        culprit, words = root, "ct_train_1005_label"
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as info:
        DatasetMMWHS.convert_mmwhs(root, str(out), 801, 802, "ct2mr", verbose=False)
    assert culprit in str(info.value) and words in str(info.value)
    assert not out.exists() or os.listdir(out) == [], "a failed conversion must leave no (partial) folder"


def test_mmwhs_interrupted_run_leaves_nothing(mmwhs_root, tmp_path, monkeypatch):
    calls = []
    real_save = DatasetMMWHS.save_volume

    def save_then_interrupt(*args):
        calls.append(args[-1])
        if len(calls) == 50:
            raise KeyboardInterrupt
        real_save(*args)

    monkeypatch.setattr(DatasetMMWHS, "save_volume", save_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        DatasetMMWHS.convert_mmwhs(mmwhs_root, str(out), 801, 802, verbose=False)
    assert len(calls) == 50 and os.listdir(out) == []


def test_mmwhs_refuses_overwrite_and_id_clash(mmwhs_root, tmp_path):
    out = str(tmp_path)
    DatasetMMWHS.convert_mmwhs(mmwhs_root, out, 801, 802, verbose=False)
    marker = os.path.join(out, "Dataset802_MMWHS_MR_target_4cls", "marker.txt")
    open(marker, "w").close()
    with pytest.raises(FileExistsError, match="overwrite"):
        DatasetMMWHS.convert_mmwhs(mmwhs_root, out, 801, 802, verbose=False)
    assert os.path.exists(marker)
    DatasetMMWHS.convert_mmwhs(mmwhs_root, out, 801, 802, overwrite=True, verbose=False, channel_name="image")
    assert not os.path.exists(marker)
    for folder in os.listdir(out):  # one shared channel name on request
        assert _json(os.path.join(out, folder))["channel_names"] == {"0": "image"}
    assert sorted(os.listdir(out)) == ["Dataset801_MMWHS_CT_source_4cls", "Dataset802_MMWHS_MR_target_4cls"]
    with pytest.raises(FileExistsError, match="already used"):  # same id, other name: nnU-Net could not tell them apart
        DatasetMMWHS.convert_mmwhs(mmwhs_root, out, 801, 802, classes=7, overwrite=True, verbose=False)


# ================================================================================================== BCP

ASEG_CODES = (10, 11, 12, 13, 17, 18, 26, 49, 50, 51, 52, 53, 54, 58, 2, 41, 4, 28, 60, 1000, 24, 3)
ASEG_TO_CLASS = {17: 1, 53: 1, 18: 2, 54: 2, 11: 3, 50: 3, 12: 4, 51: 4, 13: 5, 52: 5, 10: 6, 49: 6, 26: 7, 58: 7}
BCP_LABELS = {"background": 0, "Hippocampus": 1, "Amygdala": 2, "Caudate": 3, "Putamen": 4, "Pallidum": 5,
              "Thalamus": 6, "Accumbens": 7}
# subject -> session -> {modality: [entities before the suffix]}
BCP_TREE = {
    "0001": {"1mo": {"T1w": ["run-010", "run-002"], "T2w": ["run-001"]}, "3mo": {"T1w": ["run-001"]},
             "12mo": {"T1w": ["run-001"], "T2w": ["run-001"]}, "24mo": {"T2w": ["run-001"]}},
    "0002": {"6mo": {"T1w": ["run-001"], "T2w": ["run-001"]},
             "18mo": {"T1w": ["acq-mprage_run-001"], "T2w": ["run-001"]}},
    "0003": {"2mo": {"T2w": ["run-001"]}, "14mo": {"T1w": ["run-001"], "T2w": ["run-001"]}},
    "0004": {"V01": {"T1w": ["run-001"], "T2w": ["run-001"]}},  # age only in the TSV (15 months)
    "0005": {"30mo": {"T1w": ["run-001"], "T2w": ["run-001"]}},
    "0006": {"4mo": {"T2w": ["run-001"]}, "5mo": {"T2w": ["run-001"]}},
}
UNLABELED = {("0002", "18mo"), ("0006", "5mo")}
FLOAT_LABEL = ("0003", "14mo")


def _aseg(seed):
    label = np.zeros(SHAPE, np.int16)
    for k, code in enumerate(ASEG_CODES):
        start = (k * 40 + seed) % (label.size - 40)
        label.flat[start:start + 40] = code
    return label


@pytest.fixture(scope="module")
def bcp(tmp_path_factory):
    """(BIDS root, aseg derivatives folder, ages TSV, {image path: data}, {(sub, ses): raw label})"""
    root = str(tmp_path_factory.mktemp("bcp_in"))
    deriv = os.path.join(root, "derivatives", "aseg")
    images, labels = {}, {}
    index = 0
    for sub, sessions in BCP_TREE.items():
        for ses, modalities in sessions.items():
            anat = os.path.join(root, f"sub-{sub}", f"ses-{ses}", "anat")
            for modality, entity_list in modalities.items():
                for entities in entity_list:
                    index += 1
                    path = os.path.join(anat, f"sub-{sub}_ses-{ses}_{entities}_{modality}.nii.gz")
                    images[path] = (np.arange(np.prod(SHAPE)).reshape(SHAPE) + 1000 * index).astype(np.float32)
                    _save(images[path], path)
            # files that must not be picked up: a preprocessed derivative-style name and a sidecar
            open(os.path.join(anat, f"sub-{sub}_ses-{ses}_run-001_T1w.json"), "w").close()
            if (sub, ses) not in UNLABELED:
                label = _aseg(index)
                if (sub, ses) == FLOAT_LABEL:
                    label = label.astype(np.float32) - np.float32(0.2)
                labels[(sub, ses)] = label
                _save(label, os.path.join(deriv, f"sub-{sub}", f"ses-{ses}", "anat",
                                          f"sub-{sub}_ses-{ses}_space-INFANTMNIacpc_desc-aseg_dseg.nii.gz"))
    _save(images[os.path.join(root, "sub-0003", "ses-2mo", "anat", "sub-0003_ses-2mo_run-001_T2w.nii.gz")],
          os.path.join(root, "sub-0003", "ses-2mo", "anat", "sub-0003_ses-2mo_desc-preproc_T1w.nii.gz"))
    tsv = os.path.join(root, "ages.tsv")
    with open(tsv, "w") as f:
        f.write("participant_id\tsession_id\tage_months\nsub-0004\tses-V01\t15\nsub-0001\tses-1mo\tn/a\n")
    return root, deriv, tsv, images, labels


def _expected_aseg(raw):
    return np.vectorize(lambda v: ASEG_TO_CLASS.get(int(v), 0))(np.rint(raw).astype(int))


def _subjects(cases):
    return {c.split("_ses-")[0] for c in cases}


def test_bcp_source_age_window_labels_and_json(bcp, tmp_path, capsys):
    root, deriv, tsv, images, labels = bcp
    folder = DatasetBCP.convert_bcp(root, str(tmp_path), 701, "T1w", "source", min_age_months=12,
                                    max_age_months=24, ages_tsv=[tsv], labels_root=deriv)
    assert os.path.basename(folder) == "Dataset701_BCP_T1w_source_12to24mo"
    assert os.listdir(tmp_path) == [os.path.basename(folder)]
    # 12-24 months with T1w and a label: 0001/12mo, 0003/14mo, 0004/V01 (15 months from the TSV); 0002/18mo has
    # no label, 0001/24mo no T1w, 0005/30mo is too old
    expected = ["sub-0001_ses-12mo", "sub-0003_ses-14mo", "sub-0004_ses-V01"]
    assert _cases(folder, "imagesTr") == expected and _cases(folder, "labelsTr", image=False) == expected
    assert not os.path.exists(os.path.join(folder, "imagesTs"))
    js = _json(folder)
    assert js["channel_names"] == {"0": "MRI"} and js["labels"] == BCP_LABELS and js["numTraining"] == 3
    for sub, ses in (("0001", "12mo"), ("0003", "14mo")):  # left/right merged; float label rounded
        out = _load(os.path.join(folder, "labelsTr", f"sub-{sub}_ses-{ses}.nii.gz"))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, _expected_aseg(labels[(sub, ses)]))
        assert set(np.unique(out)) == set(range(8))
    image = os.path.join(root, "sub-0001", "ses-12mo", "anat", "sub-0001_ses-12mo_run-001_T1w.nii.gz")
    converted = os.path.join(folder, "imagesTr", "sub-0001_ses-12mo_0000.nii.gz")
    np.testing.assert_array_equal(_load(converted), images[image])
    _assert_same_geometry(converted, image)
    _assert_same_geometry(os.path.join(folder, "labelsTr", "sub-0001_ses-12mo.nii.gz"), image)
    printed = capsys.readouterr().out
    assert "sub-0002_ses-18mo: no label map, skipped" in printed
    assert "sub-0001_ses-24mo: no T1w image, skipped" in printed
    assert "sub-0005_ses-30mo: age 30 months outside [12, 24], skipped" in printed


def test_bcp_lowest_run_and_unknown_age(bcp, tmp_path, capsys):
    root, deriv, _, images, _ = bcp
    folder = DatasetBCP.convert_bcp(root, str(tmp_path), 703, "T1w", "source", max_age_months=3,
                                    labels_root=deriv)
    assert _cases(folder, "imagesTr") == ["sub-0001_ses-1mo", "sub-0001_ses-3mo"]
    run_002 = os.path.join(root, "sub-0001", "ses-1mo", "anat", "sub-0001_ses-1mo_run-002_T1w.nii.gz")
    np.testing.assert_array_equal(_load(os.path.join(folder, "imagesTr", "sub-0001_ses-1mo_0000.nii.gz")),
                                  images[run_002])
    printed = capsys.readouterr().out
    assert "using sub-0001_ses-1mo_run-002_T1w.nii.gz (lowest run)" in printed
    assert "sub-0004_ses-V01: age unknown" in printed  # no TSV: unknown age is left out
    assert "sub-0006_ses-4mo: no T1w image, skipped" in printed
    assert "sub-0003_ses-2mo: ignored T1w file(s) with other BIDS entities" in printed


def test_bcp_target_explicit_test_subjects_via_cli(bcp, tmp_path, capsys):
    root, deriv, _, images, labels = bcp
    test_file = tmp_path / "test_subjects.txt"
    test_file.write_text("sub-0006\n")
    out = tmp_path / "out"
    DatasetBCP.main(["-i", root, "-d", "12", "-o", str(out), "--modality", "T2w", "--role", "target",
                     "--max_age_months", "6", "--labels_root", deriv, "--test_subjects", f"@{test_file}"])
    folder = os.path.join(out, "Dataset012_BCP_T2w_target_0to6mo")
    assert os.listdir(out) == [os.path.basename(folder)]
    assert _cases(folder, "imagesTr") == ["sub-0001_ses-1mo", "sub-0002_ses-6mo", "sub-0003_ses-2mo"]
    assert not os.path.exists(os.path.join(folder, "labelsTr")), "the target must be unlabeled"
    # the held-out subject: only its labeled session, with labels, and never in imagesTr
    assert _cases(folder, "imagesTs") == ["sub-0006_ses-4mo"] == _cases(folder, "labelsTs", image=False)
    np.testing.assert_array_equal(_load(os.path.join(folder, "labelsTs", "sub-0006_ses-4mo.nii.gz")),
                                  _expected_aseg(labels[("0006", "4mo")]))
    js = _json(folder)
    assert js["channel_names"] == {"0": "MRI"} and js["labels"] == BCP_LABELS and js["numTraining"] == 3
    assert js["test_subjects"] == ["sub-0006"]
    printed = capsys.readouterr().out
    assert "sub-0001_ses-3mo: no T2w image, skipped" in printed
    assert "sub-0006_ses-5mo: test subject without a label map" in printed


def test_bcp_test_fraction_splits_by_subject_deterministically(bcp, tmp_path):
    root, deriv, _, _, _ = bcp
    results = []
    for run in ("a", "b"):
        folder = DatasetBCP.convert_bcp(root, str(tmp_path / run), 20, "T2w", "target", labels_root=deriv,
                                        test_fraction=0.5, seed=3, verbose=False, channel_name="MRI")
        train, test = _cases(folder, "imagesTr"), _cases(folder, "imagesTs")
        assert _cases(folder, "labelsTs", image=False) == test
        assert not os.path.exists(os.path.join(folder, "labelsTr"))
        assert not _subjects(train) & _subjects(test), "a subject must not be split across train and test"
        assert len(_subjects(test)) == 3  # round(0.5 * 6 subjects with T2w)
        assert _subjects(train) | _subjects(test) == {f"sub-{s}" for s in BCP_TREE}
        assert _json(folder)["numTraining"] == len(train)
        assert _json(folder)["channel_names"] == {"0": "MRI"}
        results.append((train, test))
    assert results[0] == results[1]
    # a subject listed as test subject but with nothing to test is an error
    with pytest.raises(DatasetError, match="0005"):
        DatasetBCP.convert_bcp(root, str(tmp_path / "c"), 21, "T2w", "target", labels_root=deriv,
                               max_age_months=6, test_subjects=["0005"], verbose=False)
    assert not (tmp_path / "c").exists() or os.listdir(tmp_path / "c") == []


def test_bcp_label_shape_mismatch_names_file_and_leaves_nothing(bcp, tmp_path):
    root, _, _, _, labels = bcp
    bad_labels = tmp_path / "labels"
    _save(labels[("0001", "12mo")], str(bad_labels / "sub-0001_ses-12mo_T1w_dseg.nii.gz"))
    bad = str(bad_labels / "sub-0003_ses-14mo_T1w_dseg.nii.gz")
    _save(np.zeros((12, 12, 7), np.int16), bad)
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as info:
        DatasetBCP.convert_bcp(root, str(out), 702, "T1w", "source", min_age_months=12,
                               labels_glob=str(bad_labels / "sub-{sub}_ses-{ses}_{mod}_dseg.nii.gz"), verbose=False)
    assert bad in str(info.value) and "shape" in str(info.value)
    assert os.listdir(out) == []


def test_bcp_help_documents_run_choice():
    proc = subprocess.run([sys.executable, "-m", "mapseg_nnunet.dataset_conversion.DatasetBCP", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "lowest run number" in proc.stdout
