#!/usr/bin/env bash
# Fed-MAPSeg on the demo cohort (run by `make demo-federated` after `make demo-full`, whose cohort, plans, registered
# targets and MAE checkpoint it reuses): the server holds the T1w source, one simulated client per target, then
# GLC prediction of each target's test images with the global model, next to `make demo`'s models.
set -euo pipefail
eval "$(mapseg_nnunet env)"
SOURCE=951
TARGETS="952 953 954"
PLANS=${DEMO_PLANNER:-MAPSegResEncPlannerCPU}
PLANS=${PLANS/Planner/Plans}  # as make demo: DEMO_PLANNER=MAPSegPlannerCPU for the paper network
# make demo's configuration (contrast-randomized source views); the paper's: DEMO_FED_TRAINER=nnUNetTrainerMAPSegFed_demo
# DEMO_BASELINE=nnUNetTrainerMAPSegUDA_noMPL_demo DEMO_TRAINER=nnUNetTrainerMAPSegUDA_demo (as given to make demo)
FED_TRAINER=${DEMO_FED_TRAINER:-nnUNetTrainerMAPSegFed_contrastRandomized_demo}
BASELINE=${DEMO_BASELINE:-nnUNetTrainerMAPSegUDA_contrastRandomized_noMPL_demo}
CENTRALIZED=${DEMO_TRAINER:-nnUNetTrainerMAPSegUDA_contrastRandomized_demo}
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-0}
SOURCE_NAME=$(basename "$(ls -d "${nnUNet_raw}"/Dataset${SOURCE}_*)")
MAE_CHECKPOINT="${nnUNet_results}/${SOURCE_NAME}/nnUNetTrainerMAPSegMAE_demo__${PLANS}__3d_fullres/fold_all/checkpoint_final.pth"
PRED="${nnUNet_results}/demo_predictions/${PLANS}"
if [ ! -f "${MAE_CHECKPOINT}" ] || [ ! -d "${PRED}/${CENTRALIZED}" ]; then
    echo "Run make demo-full first (its MAE checkpoint and centralized predictions are compared here)" >&2
    exit 1
fi
for T in ${TARGETS}; do
    if ! ls -d "${nnUNet_raw}"/Dataset${T}_* > /dev/null 2>&1; then
        echo "Target ${T} is missing from ${nnUNet_raw}: make demo builds the T2w target only; run make demo-full" >&2
        exit 1
    fi
done
echo "== Fed-MAPSeg simulation: server on ${SOURCE_NAME}, clients ${TARGETS} (${FED_TRAINER}, from the MAE encoder)"
rm -rf "${nnUNet_results}/${SOURCE_NAME}/${FED_TRAINER}__${PLANS}__3d_fullres"
mapseg_federated_simulation -s ${SOURCE} -t ${TARGETS} -p ${PLANS} -tr ${FED_TRAINER} -device cpu \
    -pretrained_weights "${MAE_CHECKPOINT}" --workdir "$(dirname "${nnUNet_results}")/federation"
echo "== GLC prediction of each target's test images with the global model"
for T in ${TARGETS}; do
    FOLDER=$(ls -d "${nnUNet_raw}"/Dataset${T}_*)
    OUT="${PRED}/${FED_TRAINER}/$(basename "${FOLDER}")"
    nnUNetv2_predict -i "${FOLDER}/imagesTs" -o "${OUT}" -d ${SOURCE} -c 3d_fullres -tr ${FED_TRAINER} -p ${PLANS} \
        -f 0 -device cpu -npp 0 -nps 0 --disable_tta -step_size 0.833
    nnUNetv2_evaluate_simple "${FOLDER}/labelsTs" "${OUT}" -l 1 2 3 -np 1 > /dev/null
done
python -m mapseg_nnunet.cli.demo_report "${PRED}" ${BASELINE} ${CENTRALIZED} ${FED_TRAINER}
