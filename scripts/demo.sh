#!/usr/bin/env bash
# The main job end to end on the demo cohort, through the stock nnU-Net commands (run by `make demo`, which
# sets nnUNet_raw / nnUNet_preprocessed / nnUNet_results under work_dirs/ and puts .venv/bin on PATH).
set -euo pipefail
eval "$(mapseg_nnunet env)"
DATASET=901
echo "== demo cohort (synthetic nested-ellipsoid source dataset until the real-anatomy cohort lands)"
python -c "from mapseg_nnunet.synthetic import write_synthetic_dataset as w; import os; \
print(w(os.environ['nnUNet_raw'], ${DATASET}, name='Synthetic'))"
echo "== set-up check"
mapseg_nnunet doctor
echo "== plan + preprocess (MAPSegPlannerCPU -> plans MAPSegPlansCPU)"
mapseg_plan_and_preprocess -d ${DATASET} -pl MAPSegPlannerCPU -np 1 -npfp 1
echo "== training smoke run"
nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1} nnUNetv2_train ${DATASET} 3d_fullres 0 \
    -tr nnUNetTrainerMAPSegUDA_smoke -p MAPSegPlansCPU -device cpu
echo "== prediction"
IN="${nnUNet_raw}/Dataset$(printf %03d ${DATASET})_Synthetic/imagesTr"
OUT="${nnUNet_results}/demo_predictions"
nnUNetv2_predict -i "${IN}" -o "${OUT}" -d ${DATASET} -c 3d_fullres -tr nnUNetTrainerMAPSegUDA_smoke \
    -p MAPSegPlansCPU -f 0 -device cpu -npp 0 -nps 0 --disable_tta
echo "== done: predictions in ${OUT}"
