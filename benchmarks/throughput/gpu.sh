#!/usr/bin/env bash
# GPU throughput table: one full-size tomogram, read → picks, bundle path (AMP on, output stitched on the GPU when it
# fits) vs plain fp32 sliding_window_inference with sw_batch_size 1, for each windows-per-pass value below; the fastest
# bundle row per bundle goes to results_gpu.csv.
#   bash benchmarks/throughput/gpu.sh [DATA_DIR] [RUNS_DIR]      (default /tmp/tp_data /tmp/tp_runs_gpu)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data="${1:-/tmp/tp_data}"
runs="${2:-/tmp/tp_runs_gpu}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: no CUDA GPU visible to torch')"
for bs in 4 8 16 32; do
    python "$here/run.py" --data "$data" --out "$runs/sw$bs" --sw-batch-size "$bs" --results "$runs/results_sw$bs.csv"
done
python - "$runs" "$here/results_gpu.csv" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

runs, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for csv in sorted(runs.glob("results_sw*.csv")):
    table = pd.read_csv(csv)
    table["sw_batch_size"] = int(csv.stem.removeprefix("results_sw"))
    rows.append(table)
table = pd.concat(rows, ignore_index=True)
best = table.loc[table.groupby("bundle")["bundle_s"].idxmin()].reset_index(drop=True)
best.to_csv(out, index=False)
print(table.to_string(index=False))
print(f"\nfastest per bundle → {out}\n{best.to_string(index=False)}")
EOF
