#!/usr/bin/env bash
# The main job end to end on the demo cohort, through the stock nnU-Net commands (run by `make demo`, which
# sets nnUNet_raw / nnUNet_preprocessed / nnUNet_results under work_dirs/ and puts .venv/bin on PATH).
set -euo pipefail
eval "$(mapseg_nnunet env)"
SOURCE=951
# make demo: the T2w target (cross-sequence) only, the whole path in about a third of the time; make demo-full: all
# three targets (T2w, another site, a younger brain)
TARGETS=${DEMO_TARGETS:-952}
MAE_TRAINER=${DEMO_MAE_TRAINER:-nnUNetTrainerMAPSegMAE_demo}
# the benchmark's configuration (benchmarks/results/RESULTS.md): contrast randomization of the source views (a teacher robust
# to contrast) and hard masked pseudo-labels after a fitted warm-up (240 + 120 adapting iterations); its source-only
# baseline trains the same 360 iterations without target terms (iteration-matched). The paper's configuration:
# DEMO_TRAINER=nnUNetTrainerMAPSegUDA_demo DEMO_BASELINE=nnUNetTrainerMAPSegUDA_noMPL_demo make demo
TRAINER=${DEMO_TRAINER:-nnUNetTrainerMAPSegUDA_contrastRandomized_demo}
BASELINE=${DEMO_BASELINE:-nnUNetTrainerMAPSegUDA_contrastRandomized_noMPL_demo}
TTA_TRAINER=${DEMO_TTA_TRAINER:-nnUNetTrainerMAPSegTTA_demo}
# nnU-Net's ResEnc U-Net in the GLC seam (MAPSegResEncPlannerCPU -> MAPSegResEncPlansCPU), or the paper's network
# (MAPSegPlannerCPU -> MAPSegPlansCPU; it under-fits at this budget): DEMO_PLANNER=MAPSegPlannerCPU make demo
PLANNER=${DEMO_PLANNER:-MAPSegResEncPlannerCPU}
PLANS=${PLANNER/Planner/Plans}

echo "== demo cohort: MNI ICBM152 anatomy; T1w source, targets ${TARGETS} (952 T2w, 953 other site, 954 younger brain)"
# the whole cohort (the source and its three targets, in their fixed roles; seconds); the steps below use ${TARGETS}
python -m mapseg_nnunet.dataset_conversion.demo_brain -d ${SOURCE} 952 953 954 --overwrite
echo "== set-up check"
mapseg_nnunet doctor
echo "== plan + preprocess the source (${PLANNER} -> plans ${PLANS})"
mapseg_plan_and_preprocess -d ${SOURCE} -pl ${PLANNER} -np 1 -npfp 1
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
PRED="${nnUNet_results}/demo_predictions/${PLANS}"
predict_and_evaluate() {  # INPUT LABELS OUTPUT nnUNetv2_predict-model-arguments...
    local input=$1 labels=$2 output=$3
    shift 3
    nnUNetv2_predict -i "${input}" -o "${output}" -c 3d_fullres -p ${PLANS} -f 0 -device cpu -npp 0 -nps 0 \
        --disable_tta -step_size 0.833 "$@"
    nnUNetv2_evaluate_simple "${labels}" "${output}" -l 1 2 3 -np 1 > /dev/null
}
for MODEL in ${BASELINE} ${TRAINER}; do
    for T in ${TARGETS}; do
        FOLDER=$(ls -d "${nnUNet_raw}"/Dataset${T}_*)
        predict_and_evaluate "${FOLDER}/imagesTs" "${FOLDER}/labelsTs" "${PRED}/${MODEL}/$(basename "${FOLDER}")" \
            -d ${SOURCE} -tr ${MODEL}
    done
done

echo "== test-time UDA: the source-only model (${BASELINE}) is stage 1; it leaves the source site as an nnU-Net zip"
SOURCE_NAME=$(basename "$(ls -d "${nnUNet_raw}"/Dataset${SOURCE}_*)")
SITES="$(dirname "${nnUNet_results}")/test_time_sites/${PLANS}"
rm -rf "${SITES}" && mkdir -p "${SITES}"
nnUNetv2_export_model_to_zip -d ${SOURCE} -o "${SITES}/stage1.zip" -c 3d_fullres -tr ${BASELINE} -p ${PLANS} -f 0
# Table 3 reports the source domain on its validation fold: the fold-0 validation cases of the source
SOURCE_VAL="${SITES}/source_validation"
mkdir -p "${SOURCE_VAL}/images" "${SOURCE_VAL}/labels"
for CASE in $(python -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))[0]['val']))" \
        "${nnUNet_preprocessed}/${SOURCE_NAME}/splits_final.json"); do
    ln -s "${nnUNet_raw}/${SOURCE_NAME}/imagesTr/${CASE}_0000.nii.gz" "${SOURCE_VAL}/images/"
    ln -s "${nnUNet_raw}/${SOURCE_NAME}/labelsTr/${CASE}.nii.gz" "${SOURCE_VAL}/labels/"
done
predict_and_evaluate "${SOURCE_VAL}/images" "${SOURCE_VAL}/labels" "${PRED}/source_validation/${BASELINE}" \
    -d ${SOURCE} -tr ${BASELINE}
for T in ${TARGETS}; do
    FOLDER=$(ls -d "${nnUNet_raw}"/Dataset${T}_*)
    NAME=$(basename "${FOLDER}")
    echo "== target site ${NAME}: only its unlabeled images and the zip; stage 2 (${TTA_TRAINER})"
    (
        export nnUNet_raw="${SITES}/${NAME}/nnUNet_raw" nnUNet_preprocessed="${SITES}/${NAME}/nnUNet_preprocessed" \
            nnUNet_results="${SITES}/${NAME}/nnUNet_results"
        mkdir -p "${nnUNet_raw}/${NAME}"
        cp -r "${FOLDER}/imagesTr" "${FOLDER}/dataset.json" "${nnUNet_raw}/${NAME}/"
        nnUNetv2_install_pretrained_model_from_zip "${SITES}/stage1.zip"
        mapseg_receive_source_model -t ${T} -d ${SOURCE} -tr ${BASELINE} -p ${PLANS} -f 0
        nnUNetv2_train ${T} 3d_fullres 0 -tr ${TTA_TRAINER} -p ${PLANS} -device cpu
        predict_and_evaluate "${FOLDER}/imagesTs" "${FOLDER}/labelsTs" "${PRED}/${TTA_TRAINER}/${NAME}" \
            -d ${T} -tr ${TTA_TRAINER}
        predict_and_evaluate "${SOURCE_VAL}/images" "${SOURCE_VAL}/labels" \
            "${PRED}/source_validation/${TTA_TRAINER}/${NAME}" -d ${T} -tr ${TTA_TRAINER}
    )
done
python -m mapseg_nnunet.cli.demo_report "${PRED}" ${BASELINE} ${TRAINER} --test_time ${TTA_TRAINER}
echo "== done; predictions in ${PRED}"
