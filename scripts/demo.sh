#!/usr/bin/env bash
# The main job end to end on the demo cohort, through the stock nnU-Net commands (run by `make demo`, which
# sets nnUNet_raw / nnUNet_preprocessed / nnUNet_results under work_dirs/ and puts .venv/bin on PATH).
set -euo pipefail
eval "$(mapseg_nnunet env)"
SOURCE=951
TARGETS="952 953 954"
MAE_TRAINER=${DEMO_MAE_TRAINER:-nnUNetTrainerMAPSegMAE_smoke}
TRAINER=${DEMO_TRAINER:-nnUNetTrainerMAPSegUDA_smoke}
PLANS=MAPSegPlansCPU

echo "== demo cohort: MNI ICBM152 anatomy; T1w source, T2w / other-site / younger-brain targets"
python -m mapseg_nnunet.dataset_conversion.demo_brain -d ${SOURCE} ${TARGETS} --overwrite
echo "== set-up check"
mapseg_nnunet doctor
echo "== plan + preprocess the source (MAPSegPlannerCPU -> plans ${PLANS})"
mapseg_plan_and_preprocess -d ${SOURCE} -pl MAPSegPlannerCPU -np 1 -npfp 1
echo "== register the unlabeled targets to the source"
mapseg_register_targets -s ${SOURCE} -t ${TARGETS} -p ${PLANS}
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
echo "== MAE pretraining on source + targets (${MAE_TRAINER})"
nnUNetv2_train ${SOURCE} 3d_fullres all -tr ${MAE_TRAINER} -p ${PLANS} -device cpu
MAE_CHECKPOINT="${nnUNet_results}/$(basename "$(ls -d "${nnUNet_raw}"/Dataset${SOURCE}_*)")/${MAE_TRAINER}__${PLANS}__3d_fullres/fold_all/checkpoint_final.pth"
echo "== segmentation training from the MAE encoder (${TRAINER})"
nnUNetv2_train ${SOURCE} 3d_fullres 0 -tr ${TRAINER} -p ${PLANS} -device cpu -pretrained_weights "${MAE_CHECKPOINT}"
echo "== prediction on each target's held-out test images, Dice against their test labels"
for T in ${TARGETS}; do
    FOLDER=$(ls -d "${nnUNet_raw}"/Dataset${T}_*)
    OUT="${nnUNet_results}/demo_predictions/$(basename "${FOLDER}")"
    nnUNetv2_predict -i "${FOLDER}/imagesTs" -o "${OUT}" -d ${SOURCE} -c 3d_fullres -tr ${TRAINER} -p ${PLANS} \
        -f 0 -device cpu -npp 0 -nps 0 --disable_tta
    nnUNetv2_evaluate_simple "${FOLDER}/labelsTs" "${OUT}" -l 1 2 3 -np 1 > /dev/null
done
python - <<'PY'
import json, os, glob
root = os.path.join(os.environ["nnUNet_results"], "demo_predictions")
print(f"\n{'target test set':32s} {'CSF':>6s} {'GM':>6s} {'WM':>6s} {'mean':>6s}   (Dice, %)")
for folder in sorted(glob.glob(os.path.join(root, "Dataset*"))):
    s = json.load(open(os.path.join(folder, "summary.json")))
    per = [100 * s["mean"][k]["Dice"] for k in ("1", "2", "3")]
    print(f"{os.path.basename(folder):32s} " + " ".join(f"{d:6.1f}" for d in per) +
          f" {100 * s['foreground_mean']['Dice']:6.1f}")
PY
echo "== done (trainer ${TRAINER}; predictions in ${root:-${nnUNet_results}/demo_predictions})"
