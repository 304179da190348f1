"""The demo cohort the benchmarks run on (``mapseg_nnunet.dataset_conversion.demo_brain``): dataset ids, the
domain shift of each target, plans names and the foreground classes."""
from mapseg_nnunet.dataset_conversion.demo_brain import LABELS as DEMO_LABELS

SOURCE = 951
TARGETS = (952, 953, 954)
ORACLES = (955, 956, 957)  # each target's training images with their labels, for the target-oracle ceiling
SHIFTS = dict(zip(TARGETS, ("cross-sequence (T2w)", "cross-site", "cross-age")))
PLANS, STOCK_PLANS = "MAPSegPlansCPU", "nnUNetPlansCPU"
UNET_PLANS = "MAPSegResEncPlansCPU"
PLANNERS = {UNET_PLANS: "MAPSegResEncPlannerCPU", PLANS: "MAPSegPlannerCPU"}  # MAPSeg CPU plans -> their planner
CLASS_NAMES = {value: name for name, value in DEMO_LABELS.items() if value}  # foreground: {1: "CSF", 2: "GM", ...}
LABELS = tuple(CLASS_NAMES)
