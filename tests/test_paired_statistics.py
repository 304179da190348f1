"""Paired statistics of the benchmark report: per-case differences, the two-level bootstrap and its verdicts."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.paired import paired_differences, paired_lines, paired_table
from mapseg_nnunet.evaluation.paired import bootstrap_interval, verdict
from benchmarks.report import render, summary

TARGETS = {"952": "cross-sequence (T2w)", "953": "cross-site", "954": "cross-age"}
CASES = [f"case_{i:03d}.nii.gz" for i in range(16)]


def _scores(dice: np.ndarray) -> dict:
    """Scores of one method on one target from per-case Dice in % (every class of a case gets that case's Dice,
    stored as fractions as the benchmark does)."""
    cases = {c: {str(k): float(d) / 100 for k in (1, 2, 3)} for c, d in zip(CASES, dice)}
    mean = float(np.mean(dice))
    return {"mean": mean, "classes": {str(k): mean for k in (1, 2, 3)}, "cases": cases}


def _quality(seeds=(0, 1, 2), spread=0.5) -> dict:
    """floor < source_only_cr < uda_cr (+5 on every case, spread ``spread``), a method symmetric around the
    reference, a clearly worse one, and fed_cr on the first seed only; per-case Dice in % around 60."""
    rng = np.random.default_rng(0)
    quality = {}
    for seed in seeds:
        base = 60 + rng.normal(0, 5, len(CASES))
        symmetric = np.resize([1.0, -1.0], len(CASES))  # differences +1, -1, +1, ...: mean 0
        row = {"floor": _scores(base - 20), "source_only_cr": _scores(base),
               "uda_cr": _scores(base + 5 + spread * np.resize([1.0, -1.0], len(CASES))),
               "source_only_cr_matched": _scores(base + symmetric), "tta_cr": _scores(base - 10)}
        if seed == seeds[0]:
            row["fed_cr"] = _scores(base + 2)
        quality[str(seed)] = {m: {t: scores for t in TARGETS} for m, scores in row.items()}
    return quality


def test_a_better_method_is_better_on_every_case():
    differences = paired_differences(_quality(), "uda_cr", "source_only_cr", "952")
    entry = bootstrap_interval(differences)
    assert math.isclose(entry["mean"], 5.0, rel_tol=1e-12)  # +5.5 / +4.5 alternating: exactly 5 up to rounding
    assert 4.5 < entry["ci95"][0] < 5.0 < entry["ci95"][1] < 5.5 and verdict(entry) == "better"
    assert bootstrap_interval(differences) == entry  # deterministic


def test_differences_symmetric_around_zero_are_unresolved():
    entry = bootstrap_interval(paired_differences(_quality(), "source_only_cr_matched", "source_only_cr", "953"))
    assert abs(entry["mean"]) < 1e-9 and entry["ci95"][0] < 0 < entry["ci95"][1]
    assert verdict(entry) == "unresolved"


def test_a_clearly_worse_method_is_worse():
    entry = bootstrap_interval(paired_differences(_quality(), "tta_cr", "source_only_cr", "954"))
    assert math.isclose(entry["mean"], -10.0, rel_tol=1e-12) and entry["ci95"][1] < 0 and verdict(entry) == "worse"


def test_n_counts_cases_times_seeds_and_a_one_seed_method_pairs_on_its_seed_only():
    quality = _quality()
    assert bootstrap_interval(paired_differences(quality, "uda_cr", "source_only_cr", "952"))["n"] == 16 * 3
    fed = paired_differences(quality, "fed_cr", "uda_cr", "952")
    assert list(fed) == ["0"] and fed["0"].shape == (16,)  # fed_cr ran on the first seed only
    assert bootstrap_interval(fed)["n"] == 16
    assert paired_differences(quality, "oracle", "uda_cr", "952") == {}  # never run
    table = paired_table(quality, TARGETS)
    assert table["fed-vs-uda"]["cross-site"]["n"] == 16 and table["uda-vs-teacher"]["cross-site"]["n"] == 48
    json.dumps(table)  # plain floats and ints


def test_mismatched_case_names_raise():
    quality = _quality()
    scores = quality["1"]["uda_cr"]["953"]
    quality["1"]["uda_cr"]["953"] = {**scores, "cases": {f"other_{c}": v for c, v in scores["cases"].items()}}
    with pytest.raises(ValueError, match="uda_cr.*source_only_cr.*seed 1"):
        paired_differences(quality, "uda_cr", "source_only_cr", "953")


def test_disagreeing_seeds_give_a_wide_interval_containing_zero():
    rng = np.random.default_rng(1)  # seed means +10 and -10, tiny spread within each seed
    differences = {"0": 10 + rng.normal(0, 0.1, 16), "1": -10 + rng.normal(0, 0.1, 16)}
    entry = bootstrap_interval(differences)
    lo, hi = entry["ci95"]
    assert lo < 0 < hi and hi - lo > 10 and verdict(entry) == "unresolved"
    pooled = bootstrap_interval({"all": np.concatenate(list(differences.values()))})  # cases only: narrower
    assert pooled["ci95"][1] - pooled["ci95"][0] < hi - lo


def test_best_vs_floor_picks_the_highest_mean_and_names_it():
    table = paired_table(_quality(), TARGETS)
    for shift in TARGETS.values():
        entry = table["best-vs-floor"][shift]
        assert entry["method"] == "uda_cr"  # +5 over the teacher; fed_cr is +2, the matched control +0
        assert math.isclose(entry["mean"], 25.0, rel_tol=1e-12) and verdict(entry) == "better"
    lines = "\n".join(paired_lines(table))
    assert "| best-vs-floor (uda_cr) | cross-age | +25.0 |" in lines
    assert "| tta-vs-teacher | cross-site | -10.0 |" in lines
    assert lines.count("| worse |") == 6  # tta and fed, each shift
    assert "contains 0" in lines


def test_render_writes_paired_and_keeps_summary(tmp_path):
    quality = _quality()
    results = {"quality": quality, "source": {s: {"source_only_cr": {"mean": 70.0}, **{
        f"tta_cr/{t}": {"mean": 68.0} for t in TARGETS}} for s in quality}, "ablations": {}, "selection": None}
    meta = {"commit": "abc", "command": "python -m benchmarks.run", "budget": {"plans": "MAPSegResEncPlansCPU"},
            "timings_s": {"a": 60.0}}
    json.dump({"meta": meta, "results": results, "speed": None}, open(tmp_path / "results.json", "w"))
    render(str(tmp_path))
    stored = json.load(open(tmp_path / "results.json"))
    assert list(stored) == ["summary", "paired", "meta", "results", "speed"]
    assert stored["summary"] == summary(results, TARGETS)
    assert stored["paired"] == json.loads(json.dumps(paired_table(quality, TARGETS)))
    text = open(tmp_path / "RESULTS.md").read()
    assert text.index("## 2. The goal") < text.index("## 2b. Paired differences") < text.index("## 3. Test-time")
    assert "| uda-vs-teacher | cross-sequence (T2w) | +5.0 |" in text


def test_each_ablation_on_several_seeds_gets_a_paired_row_against_the_matched_control():
    quality = _quality()
    for seed, row in quality.items():  # an ablation 3 points above the control on every case of every seed
        control = row["source_only_cr_matched"]["952"]["cases"]
        above = np.array([100 * c["1"] + 3 for c in control.values()])
        row["ablation/mask ratio 0.5"] = {t: _scores(above) for t in TARGETS}
    paired = paired_table(quality, TARGETS)
    entry = paired["mask ratio 0.5-vs-matched_control"]["cross-sequence (T2w)"]
    assert math.isclose(entry["mean"], 3.0, rel_tol=1e-9) and entry["n"] == 3 * len(CASES)
    assert verdict(entry) == "better"
    assert "uda-vs-matched_control" in paired  # the fixed comparisons stay
    assert not any(name.startswith("mask ratio") for name in paired_table(_quality(), TARGETS))
