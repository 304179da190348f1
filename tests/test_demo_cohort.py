"""The demo cohort: real MNI anatomy, deterministic, with the intended domain shifts."""
import hashlib
import json
import os

import numpy as np
import SimpleITK as sitk

from mapseg_nnunet.dataset_conversion.demo_brain import generate_demo_cohort

COUNTS = {"source_train": 2, "target_train": 1, "target_test": 1}


def _read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def _digest(folder):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            if f.endswith(".nii.gz"):
                h.update(_read(os.path.join(dirpath, f)).tobytes())
    return h.hexdigest()


def test_demo_cohort_layout_shifts_and_determinism(tmp_path):
    out = generate_demo_cohort(str(tmp_path / "a"), counts=COUNTS, verbose=False)
    assert sorted(out) == ["Age", "Site", "T2w", "source"]
    src = out["source"]
    assert sorted(os.listdir(src)) == ["dataset.json", "imagesTr", "labelsTr"]
    meta = json.load(open(os.path.join(src, "dataset.json")))
    assert meta["labels"] == {"background": 0, "CSF": 1, "GM": 2, "WM": 3} and meta["numTraining"] == 2
    for domain in ("T2w", "Site", "Age"):
        assert sorted(os.listdir(out[domain])) == ["dataset.json", "imagesTr", "imagesTs", "labelsTs"]
        assert json.load(open(os.path.join(out[domain], "dataset.json")))["channel_names"] == {"0": "MRI"}

    def stats(folder, images, labels):
        case = sorted(os.listdir(os.path.join(folder, labels)))[0]
        label = _read(os.path.join(folder, labels, case))
        image = _read(os.path.join(folder, images, case.replace(".nii.gz", "_0000.nii.gz")))
        assert set(np.unique(label)) == {0, 1, 2, 3}
        assert np.all(image[label == 0] == 0) and np.all(image[label > 0] >= 0)
        means = {c: image[label == c].mean() for c in (1, 2, 3)}
        return means, (label > 0).sum(), (label == 1).sum() / (label > 0).sum()

    src_means, src_volume, src_csf = stats(src, "imagesTr", "labelsTr")
    t2_means, _, _ = stats(out["T2w"], "imagesTs", "labelsTs")
    age_means, age_volume, age_csf = stats(out["Age"], "imagesTs", "labelsTs")
    assert src_means[1] < src_means[2] < src_means[3]          # T1w: CSF dark, WM bright
    assert t2_means[1] > t2_means[2] > t2_means[3]             # T2w-like: reversed
    assert age_volume < 0.8 * src_volume                       # smaller brains
    assert age_means[1] < age_means[3] < age_means[2]          # infant T1w: white matter darker than grey
    assert age_csf > 1.5 * src_csf                             # relatively wider CSF space
    def top_slice_share(folder, labels):  # brain area of the most superior slice / the largest slice's
        label = _read(os.path.join(folder, labels, sorted(os.listdir(os.path.join(folder, labels)))[0]))
        area = (label > 0).sum(axis=(1, 2))  # _read gives (z, y, x): z is superior
        return area[np.nonzero(area)[0][-1]] / area.max()

    assert top_slice_share(src, "labelsTr") < 0.1               # the brain tapers to the vertex
    assert top_slice_share(out["Site"], "labelsTs") > 0.3       # the field of view cuts it flat

    again = generate_demo_cohort(str(tmp_path / "b"), counts=COUNTS, verbose=False)
    assert _digest(src) == _digest(again["source"])
    other_seed = generate_demo_cohort(str(tmp_path / "c"), counts=COUNTS, seed=1, verbose=False)
    assert _digest(src) != _digest(other_seed["source"])


def test_oracle_copies_hold_the_target_training_images_with_labels(tmp_path):
    """Benchmarks' ceiling: labeled copies of the targets' training sets, without changing the cohort."""
    plain = generate_demo_cohort(str(tmp_path / "plain"), counts=COUNTS, verbose=False)
    out = generate_demo_cohort(str(tmp_path / "oracle"), counts=COUNTS, verbose=False, oracle_ids=(955, 956, 957))
    for domain, dataset_id in zip(("T2w", "Site", "Age"), (955, 956, 957)):
        assert _digest(out[domain]) == _digest(plain[domain])  # the cohort is unchanged
        oracle = out[f"oracle_{domain}"]
        assert os.path.basename(oracle) == f"Dataset{dataset_id}_DemoBrainOracle{domain}"
        assert sorted(os.listdir(oracle)) == ["dataset.json", "imagesTr", "labelsTr"]
        image = sorted(os.listdir(os.path.join(oracle, "imagesTr")))[0]
        assert np.array_equal(_read(os.path.join(oracle, "imagesTr", image)),
                              _read(os.path.join(out[domain], "imagesTr", image)))
        label = _read(os.path.join(oracle, "labelsTr", image.replace("_0000", "")))
        brain = _read(os.path.join(oracle, "imagesTr", image)) > 0
        assert set(np.unique(label)) == {0, 1, 2, 3} and (label[brain] > 0).mean() > 0.95


def test_options_out_of_range_are_refused_before_anything_is_written(tmp_path):
    import pytest
    raw = tmp_path / "raw"
    raw.mkdir()
    for kwargs, message in (({"dataset_ids": (951, 952, 952, 954)}, "distinct"),
                            ({"dataset_ids": (951, 952, 953, 1000)}, "1-999"),
                            ({"dataset_ids": (951, 952, 953)}, "one per target domain"),
                            ({"seed": -1}, "seed"),
                            ({"counts": {"target_test": 0}}, "counts must be integers >= 1"),
                            ({"counts": {"test": 2}}, "unknown counts"),
                            ({"oracle_ids": (951, 956, 957)}, "distinct")):
        with pytest.raises(ValueError, match=message):
            generate_demo_cohort(str(raw), verbose=False, **kwargs)
        assert os.listdir(raw) == []


def test_a_target_smaller_than_the_patch_is_refused_and_nothing_is_left(tmp_path, monkeypatch):
    """The age target's brains shrunk far below the CPU patch: the error names the case, and nnUNet_raw keeps
    neither the target nor the datasets written before it (all are moved into place only at the end)."""
    import pytest
    from mapseg_nnunet.dataset_conversion import demo_brain
    raw = tmp_path / "raw"
    existing = raw / "Dataset951_DemoBrainSourceT1w"
    existing.mkdir(parents=True)
    (existing / "marker").write_text("the user's previous source")
    monkeypatch.setattr(demo_brain, "AGE_SCALE", 0.25)
    with pytest.raises(ValueError, match=r"DemoBrainTargetAge/imagesTr/\S+: foreground spans"):
        generate_demo_cohort(str(raw), counts=COUNTS, overwrite=True, verbose=False)
    assert sorted(os.listdir(raw)) == ["Dataset951_DemoBrainSourceT1w"]
    assert os.listdir(existing) == ["marker"]  # replaced only once the whole cohort is complete


def test_more_test_cases_leave_the_other_cases_as_they_were(tmp_path):
    """Test cases beyond the main stream's come from each target's own stream: raising ``target_test`` adds cases
    and changes none of the others (training sets, the first test cases, the later targets)."""
    from mapseg_nnunet.dataset_conversion.demo_brain import MAIN_STREAM_TEST_CASES
    few = {"source_train": 1, "target_train": 1, "target_test": MAIN_STREAM_TEST_CASES}
    a = generate_demo_cohort(str(tmp_path / "a"), counts=few, verbose=False)
    b = generate_demo_cohort(str(tmp_path / "b"), counts={**few, "target_test": MAIN_STREAM_TEST_CASES + 2},
                             verbose=False)
    for role in a:
        for sub in sorted(os.listdir(a[role])):
            if not os.path.isdir(os.path.join(a[role], sub)):
                continue
            names = sorted(os.listdir(os.path.join(a[role], sub)))
            extra = sorted(set(os.listdir(os.path.join(b[role], sub))) - set(names))
            assert len(extra) == (2 if sub.endswith("Ts") else 0), (role, sub, extra)
            for name in names:
                np.testing.assert_array_equal(_read(os.path.join(a[role], sub, name)),
                                              _read(os.path.join(b[role], sub, name)))
            if sub == "imagesTs":
                last = _read(os.path.join(b[role], sub, names[-1]))
                assert not any(np.array_equal(last, _read(os.path.join(b[role], sub, e))) for e in extra)
