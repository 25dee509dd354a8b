#!/usr/bin/env bash
# The recipe of the shipped SemiETPicker and SaSi weights: synthetic tomograms over a spread of acquisitions
# (cryoet_monai.data.acquisition_spread: 12-25 Å voxels, defocus, dose, asymmetric tilt ranges, ice thickness,
# vesicles, gold, SHREC-species decoys, uneven background; protein dark), supervised training at 20.024 Å on all
# labels from random weights, thresholds tuned on the spread's own validation tomograms. Resumable: re-run the same command after an
# interruption (synthesis skips finished tomograms, training resumes from its last checkpoint).
#   bash benchmarks/transfer/train_shipped.sh SHARED_DATA WORK [semietpicker|sasi|all]
# SHARED_DATA holds templates_10A/ and czii_picks/ (the reference data); WORK receives data, runs and logs.
# The two trainings run side by side, one CPU thread each (about 100 min on 2 cores).
set -euo pipefail
shared="$1"
work="$2"
which="${3:-all}"
voxel=20.024
mkdir -p "$work"
python -c "
from cryoet_monai.data.acquisition_spread import synthesize_spread
synthesize_spread('$work/spread', n_training=12, n_validation=3, seed=0,
                  templates='$shared/templates_10A', layout='$shared/czii_picks')"
manifest="$work/spread/manifest.json"
train_semietpicker() {
    OMP_NUM_THREADS=1 cryoet-monai run semietpicker train --manifest "$manifest" --output_dir "$work/semietpicker" --pretrained null \
        --target_voxel_size "$voxel" --max_epochs 32 --epoch_length 50 --val_interval 16
    OMP_NUM_THREADS=1 cryoet-monai run semietpicker evaluate --manifest "$manifest" --output_dir "$work/semietpicker/tuned" \
        --model_path "$work/semietpicker/models/model.pt" --thresholds_path "$work/semietpicker/thresholds.json"
}
train_sasi() {
    OMP_NUM_THREADS=1 cryoet-monai run sasi train --manifest "$manifest" --output_dir "$work/sasi" --use_pretrained false --pretrained null \
        --target_voxel_size "$voxel" --max_epochs 48 --epoch_length 25 --val_interval 24
    OMP_NUM_THREADS=1 cryoet-monai run sasi evaluate --manifest "$manifest" --output_dir "$work/sasi/tuned" \
        --model_path "$work/sasi/models/model.pt" --thresholds_path "$work/sasi/thresholds.json"
}
case "$which" in
    semietpicker) train_semietpicker > "$work/semietpicker.log" 2>&1 ;;
    sasi) train_sasi > "$work/sasi.log" 2>&1 ;;
    all) train_semietpicker > "$work/semietpicker.log" 2>&1 & train_sasi > "$work/sasi.log" 2>&1 & wait ;;
esac
echo "train_shipped: done; copy $work/<bundle>/models/{model.pt,model_info.json} to bundles/<bundle>/models/ and" \
     "$work/<bundle>/thresholds.json to bundles/<bundle>/configs/"
