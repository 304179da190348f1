#!/usr/bin/env bash
# The main job end to end on the demo cohort, through the stock nnU-Net commands (run by `make demo`, which
# sets nnUNet_raw / nnUNet_preprocessed / nnUNet_results under work_dirs/ and puts .venv/bin on PATH).
set -euo pipefail
eval "$(mapseg_nnunet env)"
SOURCE=951
TARGETS="952 953 954"
MAE_TRAINER=${DEMO_MAE_TRAINER:-nnUNetTrainerMAPSegMAE_demo}
TRAINER=${DEMO_TRAINER:-nnUNetTrainerMAPSegUDA_demo}
BASELINE=${DEMO_BASELINE:-nnUNetTrainerMAPSegUDA_noMPL_demo}
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
echo "== source-only baseline from the MAE encoder (${BASELINE}: source terms only, no target terms)"
nnUNetv2_train ${SOURCE} 3d_fullres 0 -tr ${BASELINE} -p ${PLANS} -device cpu -pretrained_weights "${MAE_CHECKPOINT}"
echo "== MAPSeg UDA from the MAE encoder (${TRAINER}: masked pseudo-labeling, EMA teacher, GLC)"
nnUNetv2_train ${SOURCE} 3d_fullres 0 -tr ${TRAINER} -p ${PLANS} -device cpu -pretrained_weights "${MAE_CHECKPOINT}"
echo "== GLC prediction on each target's held-out test images, Dice against their test labels"
PRED="${nnUNet_results}/demo_predictions"
for MODEL in ${BASELINE} ${TRAINER}; do
    for T in ${TARGETS}; do
        FOLDER=$(ls -d "${nnUNet_raw}"/Dataset${T}_*)
        OUT="${PRED}/${MODEL}/$(basename "${FOLDER}")"
        nnUNetv2_predict -i "${FOLDER}/imagesTs" -o "${OUT}" -d ${SOURCE} -c 3d_fullres -tr ${MODEL} -p ${PLANS} \
            -f 0 -device cpu -npp 0 -nps 0 --disable_tta -step_size 0.833
        nnUNetv2_evaluate_simple "${FOLDER}/labelsTs" "${OUT}" -l 1 2 3 -np 1 > /dev/null
    done
done
python -m mapseg_nnunet.demo_report "${PRED}" ${BASELINE} ${TRAINER}
echo "== done; predictions in ${PRED}"
