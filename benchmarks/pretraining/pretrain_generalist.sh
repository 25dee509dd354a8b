#!/usr/bin/env bash
# Generalist pre-training of a bundle's network (semietpicker: heatmaps; sasi: segmentation U-Net; cryomae: the MAE
# encoder, on micrographs of cryomae_pool.py). The 3D bundles share one pool of synthetic tomograms over a spread of
# acquisitions (cryoet_monai.data.acquisition_spread, species="generalist": the twelve SHREC templates and twelve
# procedural families, never a CZII species; 12-25 Å voxels, defocus, dose, asymmetric tilt ranges, ice, vesicles,
# gold, uneven background; protein dark) and train with the bundle's train.yaml + pretrain_generalist.yaml at
# 20.024 Å through a smart cache. Long (hours on CPU) and resumable: re-run the same command after an interruption
# (synthesis skips finished tomograms or micrograph sets, training resumes from its last epoch checkpoint;
# checkpoints stay in WORK, out of git). POOL_SIZE applies to the 3D pool.
#   bash benchmarks/pretraining/pretrain_generalist.sh BUNDLE SHARED_DATA WORK [POOL_SIZE] [MAX_EPOCHS]
# SHARED_DATA holds templates_10A/ and empiar10017_micrographs/ (the reference data); WORK receives the pool,
# WORK/BUNDLE (the run) and WORK/BUNDLE.log. Ship the result with ship_generalist.py.
set -euo pipefail
bundle="$1"
shared="$2"
work="$3"
pool_size="${4:-32}"
epochs=(${5:+--max_epochs "$5"})
mkdir -p "$work"
if [ "$bundle" = cryomae ]; then
    pool="$work/cryomae_pool"
    base=pretrain.yaml
    OMP_NUM_THREADS=1 python "$(dirname "$0")/cryomae_pool.py" --empiar "$shared/empiar10017_micrographs" \
        --templates "$shared/templates_10A" --out "$pool" >> "$work/cryomae_pool.log" 2>&1
else
    pool="$work/pool"
    base=train.yaml
    OMP_NUM_THREADS=1 python -c "
from cryoet_monai.data.acquisition_spread import synthesize_spread
synthesize_spread('$pool', n_training=$pool_size, n_validation=2, seed=0, templates='$shared/templates_10A',
                  species='generalist')" >> "$work/pool.log" 2>&1
fi
configs="$(python -c "from cryoet_monai.bundles import bundle_dir; print(bundle_dir('$bundle') / 'configs')")"
OMP_NUM_THREADS=1 python -m monai.bundle run --config_file "['$configs/$base','$configs/pretrain_generalist.yaml']" \
    --manifest "$pool/manifest.json" --output_dir "$work/$bundle" "${epochs[@]}" >> "$work/$bundle.log" 2>&1
echo "pretrain_generalist: done; ship $work/$bundle/models/model.pt with: python benchmarks/pretraining/ship_generalist.py --bundle $bundle --work $work"
