#!/bin/bash
# priority order: plain vs full SaSi at every N, then the single-component rows
PY=/work/main/.venv/bin/python
S=/work/main/benchmarks/few_shot/run_few_shot.py
A="--data /tmp/sasi_bench/czii-bin2 --out /tmp/sasi_bench/runs"
nice -n 10 $PY $S $A --shots 3 5 10 --rows "plain U-Net" "SaSi (all)"
nice -n 10 $PY $S $A --shots 5 --rows "+ pre-training" "+ infill" "+ consistency"
nice -n 10 $PY $S $A --shots 3 10 --rows "+ pre-training" "+ infill" "+ consistency"
nice -n 10 $PY $S $A --shots 3 5 10 --seeds 1 --rows "plain U-Net" "SaSi (all)"
