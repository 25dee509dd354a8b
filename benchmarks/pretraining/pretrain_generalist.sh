#!/usr/bin/env bash
# Generalist pre-training of the SemiETPicker heatmap network: a pool of synthetic tomograms over a spread of
# acquisitions (cryoet_monai.data.acquisition_spread, species="generalist": the twelve SHREC templates and twelve
# procedural families, never a CZII species; 12-25 Å voxels, defocus, dose, asymmetric tilt ranges, ice, vesicles,
# gold, uneven background; protein dark), then train.yaml + pretrain_generalist.yaml at 20.024 Å through a smart
# cache. Long (hours on CPU) and resumable: re-run the same command after an interruption (synthesis skips finished
# tomograms, training resumes from its last epoch checkpoint; checkpoints stay in WORK, out of git).
#   bash benchmarks/pretraining/pretrain_generalist.sh SHARED_DATA WORK [POOL_SIZE] [MAX_EPOCHS]
# SHARED_DATA holds templates_10A/ (the reference data); WORK receives the pool, the run and its log.
set -euo pipefail
shared="$1"
work="$2"
pool_size="${3:-32}"
max_epochs="${4:-200}"
mkdir -p "$work"
OMP_NUM_THREADS=1 python -c "
from cryoet_monai.data.acquisition_spread import synthesize_spread
synthesize_spread('$work/pool', n_training=$pool_size, n_validation=2, seed=0, templates='$shared/templates_10A',
                  species='generalist')" >> "$work/pool.log" 2>&1
configs="$(python -c 'from cryoet_monai.bundles import bundle_dir; print(bundle_dir("semietpicker") / "configs")')"
OMP_NUM_THREADS=1 python -m monai.bundle run --config_file "['$configs/train.yaml','$configs/pretrain_generalist.yaml']" \
    --manifest "$work/pool/manifest.json" --output_dir "$work/generalist" --max_epochs "$max_epochs" \
    >> "$work/generalist.log" 2>&1
echo "pretrain_generalist: done; $work/generalist/models/{model.pt,model_info.json} are the generalist weights"
