"""The benchmark's scoring and report: Dice as nnU-Net defines it, and the floor-to-ceiling gap arithmetic."""
import json

import numpy as np

from benchmarks.evaluation import score_folder
from benchmarks.report import earlier_speed, goal_table, quality_table, render, speed_table, summary, tta_table

TARGETS = {"952": "cross-sequence (T2w)", "953": "cross-site", "954": "cross-age"}


def test_score_folder_is_nnunets_dice_with_its_nan_convention(tmp_path):
    import SimpleITK as sitk
    rng = np.random.default_rng(0)
    predictions, labels = tmp_path / "predictions", tmp_path / "labels"
    predictions.mkdir(), labels.mkdir()
    cases = {}
    for i in range(2):
        prediction, reference = rng.integers(0, 3, (20, 20, 20)), rng.integers(0, 3, (20, 20, 20))
        for folder, array in ((predictions, prediction), (labels, reference)):
            sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(folder / f"case{i}.nii.gz"))
        cases[f"case{i}.nii.gz"] = (prediction, reference)
    scores = score_folder(str(predictions), str(labels))
    for name, (prediction, reference) in cases.items():
        for label in (1, 2):
            p, r = prediction == label, reference == label
            assert np.isclose(scores["cases"][name][str(label)], 2 * (p & r).sum() / (p.sum() + r.sum()))
        assert np.isnan(scores["cases"][name]["3"])  # absent from both: NaN, skipped by the means
    right = sum(int(((p == r) & (r > 0)).sum()) for p, r in cases.values())
    assert np.isclose(scores["foreground_voxel_accuracy"], 100 * right / sum(int((r > 0).sum()) for _, r in
                                                                               cases.values()))
    assert np.isclose(scores["mean"], np.mean([scores["classes"]["1"], scores["classes"]["2"]]))
    for label in (1, 2):  # per class: the share of the reference's voxels of that class labelled right
        right = sum(int(((p == label) & (r == label)).sum()) for p, r in cases.values())
        assert np.isclose(scores["class_voxel_accuracy"][str(label)],
                          100 * right / sum(int((r == label).sum()) for _, r in cases.values()))


def _scores(mean):
    return {"mean": mean, "classes": {"1": mean - 10, "2": mean, "3": mean + 10}}


def _results():
    quality = {}
    for seed, shift in ((0, 0.0), (1, 2.0), (2, -2.0)):
        quality[seed] = {"floor": {t: _scores(40.0) for t in TARGETS},
                         "uda_cr": {t: _scores(60.0 + shift) for t in TARGETS},
                         "oracle": {t: _scores(80.0) for t in TARGETS}}
    source = {s: {"source_only_cr": _scores(70.0), **{f"tta_cr/{t}": _scores(68.0) for t in TARGETS}}
              for s in quality}
    for s in quality:
        quality[s]["source_only_cr"] = {t: _scores(45.0) for t in TARGETS}
        quality[s]["source_only_cr_matched"] = {t: _scores(62.0) for t in TARGETS}
        quality[s]["tta_cr"] = {t: _scores(50.0) for t in TARGETS}
    return {"quality": quality, "source": source, "ablations": {}, "selection": None}


def test_quality_table_reports_mean_spread_and_gap_closed():
    lines = "\n".join(quality_table(_results(), TARGETS))
    uda = "MAPSeg centralized UDA (contrast-randomized, hard pseudo-labels)"
    assert f"| {uda} (`uda_unet_cr`) | 60.0 ± 2.0 | 60.0 ± 2.0 | 60.0 ± 2.0 |" in lines
    assert f"| {uda} | +50 % | +50 % | +50 % |" in lines  # (60 - 40) / (80 - 40)
    assert "| MAPSeg test-time UDA (from the contrast-randomized source-only model) | +25 % |" in lines
    assert "Fed-MAPSeg" not in lines  # not run: no row
    table = summary(_results(), TARGETS)
    assert table["uda_unet_cr"]["cross-site"] == {"dice": 60.0, "std": 2.0, "gap_closed": 0.5, "seeds": 3}
    assert table["floor"]["cross-age"]["gap_closed"] == 0.0 and table["oracle"]["cross-age"]["gap_closed"] == 1.0
    assert "fed_unet_cr" not in table and "source_only_unet_cr" in table
    assert "uda_paper_cr" in summary(_results(), TARGETS, "MAPSegPlansCPU")  # the backbone names the rows
    table3 = "\n".join(tta_table(_results(), TARGETS))
    assert "| cross-site | 70.0 ± 0.0 | 68.0 ± 0.0 | 45.0 ± 0.0 | 50.0 ± 0.0 |" in table3


def test_test_time_table_compares_the_seeds_that_ran_it():
    results = _results()  # test-time UDA on the first seed only, the teacher better on the other seeds
    for seed in (1, 2):
        del results["quality"][seed]["tta_cr"]
        results["quality"][seed]["source_only_cr"] = {t: _scores(55.0) for t in TARGETS}
        results["source"][seed] = {"source_only_cr": _scores(70.0)}
    table3 = "\n".join(tta_table(results, TARGETS))
    assert "| cross-site | 70.0 | 68.0 | 45.0 | 50.0 |" in table3  # before = the first seed's teacher, not 51.7
    assert summary(results, TARGETS)["tta_unet_cr"]["cross-site"]["seeds"] == 1
    results["quality"][1]["uda_cr"] = {t: _scores(80.0) for t in TARGETS}  # UDA's mean over 3 seeds: 66.0
    goals = "\n".join(goal_table(results, TARGETS))  # test-time UDA (50) against UDA on its own seed (60)
    assert "| cross-age | test-time UDA within 5 Dice of UDA | -10.0 Dice (1 seed(s) that ran both) | no |" in goals


def test_goal_table_states_each_goal_and_the_distance():
    lines = "\n".join(goal_table(_results(), TARGETS))
    # UDA closes 50 % everywhere: short of 75 % on cross-sequence by 25 points, the 50 % goal met elsewhere
    assert "| cross-sequence (T2w) | UDA closes >= 75 % of the gap | +50 % (distance +25 points) | no |" in lines
    assert "| cross-site | UDA closes >= 50 % of the gap | +50 % | yes |" in lines
    assert "| cross-age | UDA > its own source-only model (its teacher) | +15.0 Dice | yes |" in lines  # 60 vs 45
    assert "| cross-age | UDA > the iteration-matched source-only model | -2.0 Dice | no |" in lines  # 60 vs 62
    assert "| cross-age | test-time UDA within 5 Dice of UDA | -10.0 Dice (3 seed(s) that ran both) | no |" in lines
    assert "Fed-MAPSeg" not in lines  # not run: no row


def test_render_writes_results_and_plots(tmp_path):
    results = _results()
    results["selection"] = [{"epoch": e, "score": 0.5 + 0.01 * e, "source_dice": 0.6, "mpl": 0.2,
                             "target_dice": {"952": 50.0 + e}, "target_accuracy": {"952": 60.0 + e},
                             "target_classes": {"952": {"1": 40.0 + e, "2": 50.0 + e, "3": 60.0 + e}}}
                            for e in range(3)]
    meta = {"commit": "abc", "command": "python -m benchmarks.run", "budget": {"seeds": [0, 1, 2],
                                                                              "plans": "MAPSegResEncPlansCPU"},
            "timings_s": {"a": 60.0}}
    json.dump({"meta": meta, "results": results, "speed": {"rows": [
        {"name": "GLC inference / stock", "ratio": 1.5, "detail": "x"}]}}, open(tmp_path / "results.json", "w"))
    render(str(tmp_path))
    text = open(tmp_path / "RESULTS.md").read()
    assert "`abc`" in text and "| GLC inference / stock | 1.50 | x |" in text
    assert "| cross-sequence (T2w) | 52.0 | 52.0 | 2 / 2 |" in text  # Score picks the last epoch, as the oracle
    assert "| cross-site | UDA closes >= 50 % of the gap | +50 % | yes |" in text
    assert "| 2 | 42.0 / 52.0 / 62.0 (accuracy 62.0) | n/a | n/a |" in text  # per adapted epoch and class
    stored = json.load(open(tmp_path / "results.json"))["summary"]
    assert stored == summary(results, TARGETS)
    for png in ("dice_per_method.png", "score_vs_target_dice.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_skip_speed_keeps_the_ratios_of_an_earlier_run_of_the_same_work_folder_only(tmp_path):
    rows = {"rows": [{"name": "GLC inference / stock", "ratio": 1.05, "detail": "x"}]}
    meta = {"commit": "abc", "command": "python -m benchmarks.run", "work": "/w",
            "budget": {"plans": "MAPSegResEncPlansCPU"}}
    json.dump({"meta": meta, "results": {}, "speed": rows}, open(tmp_path / "results.json", "w"))
    kept = earlier_speed(str(tmp_path), "/w", "MAPSegResEncPlansCPU")
    assert kept["rows"] == rows["rows"] and kept["measured_by"] == "python -m benchmarks.run at commit abc"
    assert earlier_speed(str(tmp_path), "/other", "MAPSegResEncPlansCPU") is None  # another work folder
    assert earlier_speed(str(tmp_path), "/w", "MAPSegPlansCPU") is None  # other plans
    assert earlier_speed(str(tmp_path / "none"), "/w", "MAPSegResEncPlansCPU") is None
    assert f"Measured by `{kept['measured_by']}`." in speed_table(kept)


def test_clean_statistics_replay_reproduces_the_clean_pass_and_changes_the_masked_one():
    """The masked-input diagnostic's swap: replaying the clean views' InstanceNorm statistics on the clean views
    gives the network's own prediction; on masked views it gives something else than the masked prediction."""
    import torch
    from benchmarks.studies.masked_inputs import CleanStatistics, masked_with_clean_statistics
    from test_glc_unet import RESENC, tiny_glc_unet
    torch.manual_seed(0)
    net = tiny_glc_unet(RESENC).eval()
    with torch.no_grad():
        net.fusion.weight.normal_(0, 0.3)  # the global view matters
        b = {"data": torch.rand(2, 1, 16, 16, 16), "global": torch.rand(2, 1, 16, 16, 16),
             "box": torch.tensor([[[0., 8.], [4., 12.], [8., 16.]], [[2., 10.], [0., 16.], [5., 9.]]])}
        swap = CleanStatistics(net)
        assert len(swap.layers) > 0
        clean = net(b["data"], b["global"], b["box"], with_aux=False)["logits"].argmax(1)
        assert torch.equal(masked_with_clean_statistics(net, swap, b, b["data"], b["global"]), clean)
        x, g = b["data"] * (torch.rand_like(b["data"]) > 0.7), b["global"] * (torch.rand_like(b["global"]) > 0.7)
        masked = net(x, g, b["box"], with_aux=False)["logits"].argmax(1)
        assert not torch.equal(masked_with_clean_statistics(net, swap, b, x, g), masked)


def test_a_model_trained_with_other_settings_trains_again(tmp_path, capsys):
    """A budget changed since a model trained: its folder goes (so it trains again), an unchanged one stays."""
    import os
    import time
    from benchmarks.runner import Runner
    runner = Runner.__new__(Runner)
    runner.t0, runner.env = time.time(), {"nnUNet_preprocessed": str(tmp_path / "pre")}
    os.makedirs(tmp_path / "pre" / "Dataset951_Source")
    model = tmp_path / "results" / "Trainer__P_bench__3d_fullres"
    os.makedirs(model / "fold_0")

    def plans(path, settings):
        json.dump({"configurations": {"3d_fullres": {"patch_size": [8, 8, 8], "trainer_settings": settings}}},
                  open(path, "w"))

    plans(model / "plans.json", {"seed": 0, "ema_schedule": "large"})
    plans(tmp_path / "pre" / "Dataset951_Source" / "P_bench.json", {"seed": 0, "ema_schedule": "large"})
    runner.discard_if_settings_changed("fed", str(model), 951, "P_bench")
    assert (model / "fold_0").is_dir()
    plans(tmp_path / "pre" / "Dataset951_Source" / "P_bench.json", {"seed": 0, "ema_schedule": "small"})
    runner.discard_if_settings_changed("fed", str(model), 951, "P_bench")
    assert not model.exists() and "trained with other settings" in capsys.readouterr().out
    runner.discard_if_settings_changed("fed", str(model), 951, "P_bench")  # nothing there: nothing to do


def test_ablation_table_shows_each_class():
    from benchmarks.report import ablation_table
    results = _results()
    results["ablations"] = {"aligned": {t: _scores(55.0) for t in TARGETS}}
    lines = "\n".join(ablation_table(results, TARGETS))
    assert "| aligned | 55.0 (45 / 55 / 65) | 55.0 (45 / 55 / 65) | 55.0 (45 / 55 / 65) |" in lines
    assert "| its teacher (the source-only model it continues) | 45.0 (35 / 45 / 55) |" in lines
    assert "| no MPL: the teacher continued without target terms (iteration-matched) | 62.0 (52 / 62 / 72) |" in lines


def test_long_run_measures_how_far_weights_moved():
    import torch
    from benchmarks.studies.long_run import relative_distance
    start = {"w": torch.ones(4), "b": torch.zeros(2), "steps": torch.tensor(3)}
    moved = {"w": torch.ones(4) * 1.5, "b": torch.zeros(2), "steps": torch.tensor(9)}
    assert np.isclose(relative_distance(moved, start), 0.5)  # ||0.5 x 1_4|| / ||1_4||; integer buffers ignored
    assert relative_distance(start, start) == 0


def test_contrast_randomization_curve_table_lists_each_checkpoint_in_order(tmp_path):
    from benchmarks.cohort import TARGETS
    from benchmarks.studies.contrast_randomization import write_markdown

    def scores(mean):
        per_class = {"1": mean - 1, "2": mean, "3": mean + 1}
        return {"mean": mean, "classes": per_class, "foreground_voxel_accuracy": mean,
                "class_voxel_accuracy": per_class}

    curve = {str(it): {"source": scores(90.0), **{str(t): scores(it / 10 + t) for t in TARGETS}}
             for it in (1000, 200)}  # stored out of order
    write_markdown(str(tmp_path), {"command": "x", "plans": "P", "iterations": 1000, "seed": 0, "configurations": {
        "c": {"scores": curve["1000"], "curve": curve}}})
    curve_table = (tmp_path / "contrast_randomization_curve.md").read_text().split("Learning curve")[1]
    rows = [line for line in curve_table.splitlines() if line.startswith("| c | ")]
    assert [row.split(" | ")[1] for row in rows] == ["200", "1000"]
    first_target = TARGETS[0]
    assert f"{20 + first_target:.1f} ({19 + first_target:.0f} / {20 + first_target:.0f} / {21 + first_target:.0f})" \
        in rows[0]


def test_contrast_randomization_keeps_configurations_measured_earlier_at_the_same_budget_only(tmp_path):
    from benchmarks.studies.contrast_randomization import earlier_configurations

    path = tmp_path / "contrast_randomization_curve.json"
    assert earlier_configurations(str(path), 1000, 0, "P") == {}  # no file yet
    json.dump({"command": "first run", "plans": "P", "iterations": 1000, "seed": 0,
               "configurations": {"a": {"scores": {}}, "b": {"command": "second run", "scores": {}}}},
              open(path, "w"))
    kept = earlier_configurations(str(path), 1000, 0, "P")
    assert {name: c["command"] for name, c in kept.items()} == {"a": "first run", "b": "second run"}
    for other in ((2000, 0, "P"), (1000, 1, "P"), (1000, 0, "Q")):  # another budget, seed or plans
        assert earlier_configurations(str(path), *other) == {}
