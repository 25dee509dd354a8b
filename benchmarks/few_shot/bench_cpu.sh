#!/bin/bash
# The CPU runs behind results/, in priority order (each line resumes: finished runs are skipped).
# Run from the repository root with the reference data at ../shared/data.
export OMP_NUM_THREADS=1
PY=${PY:-python}
S=benchmarks/few_shot/run_few_shot.py
W=${W:-/tmp/sasi_bench}
CZII="--data $W/czii-bin2 --out $W/runs"
SHREC="--dataset shrec --templates ../shared/data/templates_10A --data $W/shrec --out $W/shrec_runs"
ABLATIONS=("+ pre-training" "+ infill" "+ consistency")
nice -n 10 $PY $S $CZII --shots 3 5 10 --seeds 0 1 --rows "plain U-Net" "SaSi (all)"
nice -n 10 $PY $S $CZII --shots 5 --rows "${ABLATIONS[@]}" "SemiETPicker (supervised)"
nice -n 10 $PY $S $SHREC --shots 5 --rows "plain U-Net" "SaSi (all)"
nice -n 10 $PY $S $CZII --shots 5 --seeds 1 --rows "${ABLATIONS[@]}"
# consistency guidance at this short budget, on validation only (results kept out of results/)
V=(--data $W/czii-bin2 --split validation --shots 5 --seeds 0 1 --rows "+ consistency")
nice -n 10 $PY $S "${V[@]}" --out $W/validation/rampup80 --results $W/validation/rampup80 --set "consistency#rampup_iterations=80"
nice -n 10 $PY $S "${V[@]}" --out $W/validation/weight0.1 --results $W/validation/weight0.1 --set "consistency#weight=0.1"
nice -n 10 $PY $S $CZII --shots 5 --seeds 1 --rows "SemiETPicker (supervised)"
nice -n 10 $PY $S $CZII --shots 3 10 --rows "${ABLATIONS[@]}" "SemiETPicker (supervised)"
nice -n 10 $PY $S $SHREC --shots 5 --seeds 1 --rows "plain U-Net" "SaSi (all)"
nice -n 10 $PY $S $SHREC --shots 3 10 --seeds 0 1 --rows "plain U-Net" "SaSi (all)"
# added later: the remaining single-component and SemiETPicker rows
nice -n 10 $PY $S $SHREC --shots 3 5 10 --seeds 0 1 --rows "SemiETPicker (supervised)"
nice -n 10 $PY $S $CZII --shots 3 10 --seeds 1 --rows "SemiETPicker (supervised)"
nice -n 10 $PY $S $SHREC --shots 5 --seeds 0 1 --rows "+ pre-training" "+ infill"
nice -n 10 $PY $S $CZII --shots 3 10 --seeds 1 --rows "+ pre-training" "+ infill"
nice -n 10 $PY $S $SHREC --shots 3 10 --seeds 0 --rows "+ pre-training" "+ infill"
nice -n 10 $PY $S $SHREC --shots 5 --seeds 0 1 --rows "+ consistency"
nice -n 10 $PY $S $CZII --shots 3 10 --seeds 1 --rows "+ consistency"
