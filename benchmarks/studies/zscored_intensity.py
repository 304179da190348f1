"""What the intensity rule does to z-scored MRI (issue #20): the fraction of brain voxels that end on the
background's value, with the rule of plans written before per-channel rules (negatives -> 0) and with the
``case_minimum`` rule, on brain-like z-scored cases built here
(:func:`mapseg_nnunet.data.synthetic.zscored_brain_case`: tissue plus a brighter lesion, z-scored with the brain's
statistics; background a constant negative value, or 0 for brain-only z-scoring).

    python -m benchmarks.studies.zscored_intensity [--cases 5]"""
import argparse
import json

import numpy as np

from mapseg_nnunet.data.intensity import DEFAULT_INTENSITY, intensity_settings_for_channels, normalize_case
from mapseg_nnunet.data.synthetic import zscored_brain_case


def fractions(cases: int, background_mode: str, shape=(120, 140, 100)) -> dict:
    rules = {"clip_negatives (before)": dict(DEFAULT_INTENSITY),
             "case_minimum (after)": intensity_settings_for_channels(["FLAIR"])}
    out = {name: {"non-lesion brain": [], "lesion": []} for name in rules}
    for seed in range(cases):
        image, label, brain = zscored_brain_case(np.random.default_rng(seed), shape, background_mode=background_mode)
        for name, settings in rules.items():
            normalised = normalize_case(image[None], settings)[0]
            background = float(np.median(normalised[~brain]))
            at_background = normalised == background
            out[name]["non-lesion brain"].append(float(at_background[brain & (label == 0)].mean()))
            out[name]["lesion"].append(float(at_background[label > 0].mean()))
    return {name: {region: f"{100 * np.mean(v):.2f} % (min {100 * np.min(v):.2f}, max {100 * np.max(v):.2f})"
                   for region, v in regions.items()} for name, regions in out.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps({mode: fractions(args.cases, mode) for mode in ("constant", "zero")}, indent=2))


if __name__ == "__main__":
    main()
