"""MAPSeg's intensity convention, applied to whole cases (never to patches) so that training and inference
see identical inputs. Each channel follows one rule, decided at planning time from the data and recorded in the
plans (``configurations[c]['mapseg']['intensity']['channel_rules']``):

* ``case_minimum`` (every channel not named ``CT``: MRI, raw or z-scored, any background): the case's own
  minimum becomes 0, nothing is clipped below; voxels equal to the case's constant background value (the value
  of at least half of the case's border voxels) become exactly 0 too (this matters only when the background is
  not the minimum, e.g. brain-only z-scoring with background 0 and brain voxels below it). On non-negative data
  whose background is the minimum (0) this is exactly the convention of the paper; on z-scored data with a
  constant negative background it keeps every brain voxel above the background.
* ``ct_hu`` (channels named ``CT``, nnU-Net's convention): +1024 HU, then negatives to 0 (below -1024 HU is air
  or the scanner's padding outside the field of view: nothing anatomical is set to the background value).
* ``clip_negatives``: the rule of plans written before the per-channel rules existed (no ``channel_rules``
  key): negatives set to 0. Kept only so that older plans and models reproduce; registering data with negative
  values to such plans is refused (:func:`check_against_rules`).

Then each channel is scaled into [0, 1] by its own percentile over the whole scan:
``x <- clip((x - min) / (P_p(x) - min), 0, 1)``, with p = 99.5 at inference and, during training, p drawn from
U(99, 100) with probability 0.35 (otherwise 99.5). Background therefore ends exactly at 0, which is what the
foreground box of the global view (:func:`mapseg_nnunet.data.foreground_box.case_foreground_box`) relies on.

``None`` as settings means the data were already normalised by nnU-Net's own scheme (stock plans) and are used as
they are.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mapseg_nnunet.data.errors import DatasetError

RULE_MINIMUM = "case_minimum"
RULE_CT = "ct_hu"
RULE_CLIP = "clip_negatives"
RULES = (RULE_MINIMUM, RULE_CT, RULE_CLIP)
# a non-CT channel going this far below 0 looks like CT in HU rather than MRI
HU_LIKE_MINIMUM = -500.0

DEFAULT_INTENSITY = {
    "scheme": "mapseg_percentile",
    "ct_channels": [],
    "ct_offset": 1024.0,
    "inference_percentile": 99.5,
    "train_percentile_range": [99.0, 100.0],
    "train_percentile_probability": 0.35,
}


def is_ct_channel(name: str) -> bool:
    return name.strip().upper() == "CT"


def intensity_settings_for_channels(channel_names: Sequence[str], findings: Optional[List[dict]] = None) -> dict:
    """Plans entry: a rule per channel (``ct_hu`` for channels named CT, else ``case_minimum``) and, when given,
    what the planner found in the data (:func:`survey_findings`)."""
    settings = dict(DEFAULT_INTENSITY)
    settings["ct_channels"] = [i for i, name in enumerate(channel_names) if is_ct_channel(name)]
    settings["channel_rules"] = [RULE_CT if is_ct_channel(name) else RULE_MINIMUM for name in channel_names]
    if findings is not None:
        settings["found_in_data"] = findings
    return settings


def channel_rules(settings: dict, num_channels: int) -> List[str]:
    """The rule of each channel; plans without ``channel_rules`` get the rules they were trained with."""
    if "channel_rules" in settings:
        rules = list(settings["channel_rules"])
        if len(rules) != num_channels:
            raise ValueError(f"the plans' intensity settings have {len(rules)} channel rule(s), the case has "
                             f"{num_channels} channel(s)")
        unknown = sorted(set(rules) - set(RULES))
        if unknown:
            raise ValueError(f"Unknown MAPSeg intensity rule(s) {unknown}; known: {list(RULES)}")
        return rules
    return [RULE_CT if c in settings.get("ct_channels", []) else RULE_CLIP for c in range(num_channels)]


def _border(channel: np.ndarray) -> np.ndarray:
    return np.concatenate([channel[0].ravel(), channel[-1].ravel(), channel[:, 0].ravel(), channel[:, -1].ravel(),
                           channel[:, :, 0].ravel(), channel[:, :, -1].ravel()])


def background_value(channel: np.ndarray, candidate: Optional[float] = None) -> Optional[float]:
    """The case's constant background: the value of at least half of its border voxels, or None (no constant
    background, e.g. noise or anatomy at the border). ``candidate`` (e.g. the minimum) is tried first (cheap)."""
    border = _border(np.asarray(channel))
    if candidate is not None and 2 * np.count_nonzero(border == candidate) >= border.size:
        return float(candidate)
    values, counts = np.unique(border, return_counts=True)
    i = int(np.argmax(counts))
    return float(values[i]) if 2 * counts[i] >= border.size else None


def draw_training_percentile(settings: dict, rng: np.random.Generator | None = None) -> float:
    rng = rng if rng is not None else np.random.default_rng()
    if rng.random() < settings["train_percentile_probability"]:
        low, high = settings["train_percentile_range"]
        return float(rng.uniform(low, high))
    return float(settings["inference_percentile"])


def rule_input(channel: np.ndarray, rule: str, ct_offset: float = 1024.0) -> np.ndarray:
    """The values ``rule`` scales (pointwise, so any part of a case can be mapped on its own): CT +offset and
    negatives to 0, clip_negatives negatives to 0, case_minimum the values themselves."""
    channel = np.asarray(channel, dtype=np.float32)
    if rule == RULE_CT:
        return np.maximum(channel + ct_offset, 0)
    if rule == RULE_CLIP:
        return np.maximum(channel, 0)
    if rule != RULE_MINIMUM:
        raise ValueError(f"Unknown MAPSeg intensity rule {rule!r}; known: {list(RULES)}")
    return channel


def scale_values(values: np.ndarray, low: float, high: float, background: Optional[float]) -> np.ndarray:
    """``clip((values - low) / (high - low), 0, 1)``, the case's constant ``background`` (when not ``low``) to 0;
    ``values`` are :func:`rule_input` values of one channel, ``low`` / ``high`` its case minimum and percentile."""
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    out = np.clip((values - low) / (high - low), 0, 1)
    if background is not None and background != low:
        out[values == background] = 0
    return out


def normalize_channel(channel: np.ndarray, rule: str, percentile: float, ct_offset: float = 1024.0) -> np.ndarray:
    """One channel (X, Y, Z) of a whole case under ``rule`` (module docstring)."""
    channel = rule_input(channel, rule, ct_offset)
    low = float(channel.min())
    high = float(np.percentile(channel, percentile))
    background = background_value(channel, low) if rule == RULE_MINIMUM and high > low else None
    return scale_values(channel, low, high, background)


class CaseIntensity:
    """The statistics a case's normalisation needs (per channel: minimum, constant background, the values above
    the lowest percentile the settings can ask for), computed once from the whole case, so that any part of the
    case (a patch, a sub-grid) is normalised exactly as :func:`normalize_case` normalises the whole case, at any
    percentile of the settings' range (training jitter) -- without touching the rest of the case."""

    def __init__(self, image: np.ndarray, settings: Optional[dict]):
        self.settings = settings
        if settings is None:
            return
        if settings.get("scheme") != "mapseg_percentile":
            raise ValueError(f"Unknown MAPSeg intensity scheme {settings.get('scheme')!r}")
        self.rules = channel_rules(settings, image.shape[0])
        lowest = min([settings["inference_percentile"]] + list(settings.get("train_percentile_range", [100.0])))
        self.low, self.background, self.top, self.n = [], [], [], []
        for c, rule in enumerate(self.rules):
            values = rule_input(image[c], rule, settings["ct_offset"]).ravel()
            n = values.size
            first = max(0, min(n - 2, int(np.floor(lowest / 100 * (n - 1)))))
            low = float(values.min())
            self.low.append(low)
            self.background.append(background_value(values.reshape(image.shape[1:]), low)
                                   if rule == RULE_MINIMUM else None)
            self.top.append((first, np.sort(np.partition(values, first)[first:]) if n > 1 else values.copy()))
            self.n.append(n)

    @property
    def nbytes(self) -> int:
        return 0 if self.settings is None else sum(top.nbytes for _, top in self.top)

    def percentile(self, c: int, p: float) -> float:
        """numpy's linear-interpolation percentile of channel ``c`` from the cached upper values."""
        first, top = self.top[c]
        if self.n[c] == 1:
            return float(top[0])
        r = p / 100 * (self.n[c] - 1)
        i = int(np.floor(r))
        if i < first:
            raise ValueError(f"percentile {p} is below the range the case statistics were computed for")
        a = float(top[i - first])
        b = float(top[min(i + 1 - first, top.size - 1)])
        return a + (b - a) * (r - i)

    def normalize(self, image: np.ndarray, percentile: Optional[float] = None) -> np.ndarray:
        """Normalise any part ``(C, ...)`` of the case (raw values) at ``percentile`` (default: inference)."""
        image = np.asarray(image, dtype=np.float32)
        if self.settings is None:
            return image
        percentile = self.settings["inference_percentile"] if percentile is None else percentile
        out = np.empty(image.shape, dtype=np.float32)
        for c, rule in enumerate(self.rules):
            values = rule_input(image[c], rule, self.settings["ct_offset"])
            out[c] = scale_values(values, self.low[c], self.percentile(c, percentile), self.background[c])
        return out


def normalize_case(image: np.ndarray, settings: Optional[dict], percentile: Optional[float] = None) -> np.ndarray:
    """Normalise a whole case ``(C, X, Y, Z)``; returns a new float32 array. ``percentile`` defaults to the
    inference percentile."""
    image = np.asarray(image, dtype=np.float32)
    if settings is None:
        return image
    if settings.get("scheme") != "mapseg_percentile":
        raise ValueError(f"Unknown MAPSeg intensity scheme {settings.get('scheme')!r}")
    percentile = settings["inference_percentile"] if percentile is None else percentile
    rules = channel_rules(settings, image.shape[0])
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        out[c] = normalize_channel(image[c], rules[c], percentile, settings["ct_offset"])
    return out


# ---- what the data hold: surveyed at planning and registration time


def survey_case(image: np.ndarray, files: Optional[Sequence[str]] = None
                ) -> List[Tuple[float, Optional[float], Optional[str]]]:
    """``[(minimum, constant background value or None, file of the channel)]`` per channel of a raw case
    (C, X, Y, Z)."""
    out = []
    for c, channel in enumerate(np.asarray(image)):
        low = float(np.min(channel))
        out.append((low, background_value(channel, low), files[c] if files is not None else None))
    return out


def survey_findings(channel_names: Sequence[str], surveys: Dict[str, list]) -> List[dict]:
    """Per channel, over the surveyed cases (``{file or case: survey_case(...)}``): how many cases have negative
    values and how many a non-zero constant background, with one example."""
    findings = []
    for c, name in enumerate(channel_names):
        negative = [(k, s[c]) for k, s in surveys.items() if s[c][0] < 0]
        nonzero_background = [(k, s[c]) for k, s in surveys.items() if s[c][1] not in (None, 0.0)]
        example = (negative or nonzero_background or [None])[0]
        findings.append({
            "channel": name, "cases": len(surveys), "cases_with_negative_values": len(negative),
            "cases_with_nonzero_background": len(nonzero_background),
            "lowest_minimum": min((s[c][0] for s in surveys.values()), default=None),
            "example": None if example is None else
            f"{example[1][2] or example[0]}: minimum {example[1][0]:.4g}, background "
            f"{'not constant' if example[1][1] is None else format(example[1][1], '.4g')}",
        })
    return findings


def describe_findings(findings: List[dict], rules: Sequence[str], where: str) -> List[str]:
    """Human-readable lines (printed by planning and registration) saying what was found and what the rule does."""
    lines = []
    for finding, rule in zip(findings, rules):
        head = f"{where}: channel {finding['channel']!r} ({finding['cases']} cases): "
        odd = finding["cases_with_negative_values"] or finding["cases_with_nonzero_background"]
        if rule == RULE_CT:
            lines.append(head + "CT in HU; rule ct_hu: +1024 HU, values below -1024 HU (air, padding) -> 0, then "
                                "percentile scaling")
        elif rule == RULE_CLIP:
            lines.append(head + "rule clip_negatives (plans written before per-channel rules): negatives -> 0")
        elif odd:
            lines.append(head + f"negative values in {finding['cases_with_negative_values']} case(s), a non-zero "
                                f"constant background in {finding['cases_with_nonzero_background']} (e.g. "
                                f"{finding['example']}): z-scored or shifted input. Rule case_minimum: each case is "
                                f"shifted by its own minimum and its constant background set to 0, nothing is "
                                f"clipped, so no tissue voxel takes the background value")
        else:
            lines.append(head + "non-negative, background 0; rule case_minimum (the paper's convention)")
        if rule != RULE_CT and finding["lowest_minimum"] is not None and finding["lowest_minimum"] <= HU_LIKE_MINIMUM:
            lines.append(head + f"values down to {finding['lowest_minimum']:.4g} look like CT in HU; if this is CT, "
                                f"name the channel 'CT' in dataset.json's channel_names (rule ct_hu)")
    return lines


def check_against_rules(rules: Sequence[str], surveys: Dict[str, list], plans_name: str) -> None:
    """Refuse data the plans' rules would destroy: negative values under ``clip_negatives`` (older plans)."""
    for c, rule in enumerate(rules):
        if rule != RULE_CLIP:
            continue
        for case, survey in surveys.items():
            if survey[c][0] < 0:
                raise DatasetError(
                    f"{survey[c][2] or case}: channel {c} has negative intensities (minimum {survey[c][0]:.4g}), "
                    f"which plans "
                    f"{plans_name} set to 0 (they predate per-channel intensity rules), so tissue would take the "
                    f"background value. Plan the source again with mapseg_plan_and_preprocess (rule case_minimum "
                    f"shifts each case by its own minimum instead), or give non-negative images.")


# surveys of image files this process has read already (keyed by path, modification time and size), so that
# planning reads each source image once: mapseg_plan_and_preprocess's image check surveys as it checks
# (:func:`survey_and_remember`), the planner's :func:`survey_dataset` then finds every case here
_SURVEYED: Dict[tuple, list] = {}


def _files_key(files: Sequence[str]) -> tuple:
    return tuple((os.path.abspath(f), os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)


def survey_and_remember(image: np.ndarray, files: Sequence[str]) -> list:
    """:func:`survey_case` of a case just read, remembered for :func:`survey_dataset`."""
    survey = survey_case(image, files)
    _SURVEYED[_files_key(files)] = survey
    return survey


def survey_dataset(dataset: Dict[str, dict], reader, progress: bool = False) -> Dict[str, list]:
    """``{case: survey_case(...)}`` of an nnU-Net dataset dict (``case -> {'images': [files]}``) read with
    nnU-Net's ``reader`` (cases this process surveyed already, unchanged since, are not read again); a file that
    cannot be read is named."""
    from tqdm import tqdm

    surveys = {}
    for case, entry in tqdm(dataset.items(), desc="Surveying intensities", disable=not progress):
        try:
            remembered = _SURVEYED.get(_files_key(entry["images"]))
            if remembered is not None:
                surveys[case] = remembered
                continue
            images, _ = reader.read_images(entry["images"])
        except Exception as e:
            raise DatasetError(f"{entry['images']}: cannot read case {case}: {e}") from e
        surveys[case] = survey_and_remember(images, entry["images"])
    return surveys
