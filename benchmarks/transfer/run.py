"""Transfer: every 3D bundle as shipped, run as a user would, on tomograms from a simulator that is not ours.

    cryoet-monai synth --out OWN --preset czii-bin2 --seed 0 --layout ../shared/data/czii_picks
    python benchmarks/transfer/run.py --own OWN/manifest.json \
        --external ../shared/data/external_phantom/manifest.json --work WORK

For each bundle, `cryoet-monai run <bundle> inference --manifest M --split test --output_dir O` with no other flag
(the shipped weights, thresholds, voxel size and contrast from the bundle), on the external phantom's test split and
on our own synthetic test split; beside them the zero-label blob floor (`cryoet-monai baseline`) on both. The external
data is for evaluation only: nothing here trains, fine-tunes or tunes a threshold on it. Writes `results.md` and
`results.csv` here (or `--results`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks
from cryoet_monai.inference.blobs import pick_with_blobs
from cryoet_monai.metrics import score_picks

HERE = Path(__file__).resolve().parent
BUNDLES = ("semietpicker", "sasi")
CLI = str(Path(sys.executable).with_name("cryoet-monai"))


def pick_as_a_user(bundle: str, manifest: Path, out: Path) -> float:
    """Run the bundle's shipped model on the manifest's test split; returns the wall time in seconds."""
    start = time.perf_counter()
    command = [CLI, "run", bundle, "inference", "--manifest", str(manifest), "--split", "test", "--output_dir", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def score_row(method: str, data: str, manifest: Path, picks: pd.DataFrame, seconds: float) -> dict:
    result = score_picks(picks, load_manifest(manifest), "test")
    row = {"method": method, "data": data, "czii_score": result["score"], "mean_f1": result["mean_f1"], "seconds": seconds}
    for name, r in result["classes"].items():
        row[f"{name} f1"] = r["f1"]
        row[f"{name} recall"] = r["recall"]
        row[f"{name} precision"] = r["precision"]
    return row


def markdown(table: pd.DataFrame, argv: list[str]) -> str:
    classes = [c[: -len(" f1")] for c in table.columns if c.endswith(" f1")]
    lines = [
        "# Transfer: shipped models on tomograms we did not simulate",
        "",
        "CZII score (F-β4, weighted), mean F1 over the scored classes and per-class F1 (recall / precision) of the test",
        "split. `external` = `../shared/data/external_phantom` (another simulator, evaluation only), `own` = our `synth`",
        "`czii-bin2` test split. Every bundle run with no flag beyond the manifest; CPU wall time of the whole command.",
        "",
        "| method | data | CZII score | mean F1 | " + " | ".join(classes) + " | s |",
        "|---|---|---|---|" + "---|" * len(classes) + "---|",
    ]
    for row in table.to_dict("records"):
        cells = [f"{row[f'{c} f1']:.2f} ({row[f'{c} recall']:.2f} / {row[f'{c} precision']:.2f})" for c in classes]
        lines.append(f"| {row['method']} | {row['data']} | {row['czii_score']:.3f} | {row['mean_f1']:.3f} | "
                     + " | ".join(cells) + f" | {row['seconds']:.0f} |")
    lines += ["", "Reproduce: `python benchmarks/transfer/run.py " + " ".join(argv) + "`", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--own", type=Path, required=True, help="manifest of our synthetic czii-bin2 data (its test split)")
    parser.add_argument("--external", type=Path, required=True, help="manifest of the external phantom")
    parser.add_argument("--work", type=Path, required=True, help="folder for the picks")
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    rows = []
    for data, manifest in (("external", args.external), ("own", args.own)):
        for bundle in BUNDLES:
            out = args.work / data / bundle
            seconds = pick_as_a_user(bundle, manifest, out)
            rows.append(score_row(f"{bundle} (shipped)", data, manifest, read_picks(out / "picks.csv"), seconds))
            print(rows[-1]["method"], data, f"{rows[-1]['czii_score']:.3f}", flush=True)
        start = time.perf_counter()
        blobs = pick_with_blobs(manifest, "test")
        rows.append(score_row("blob floor", data, manifest, blobs, time.perf_counter() - start))
    table = pd.DataFrame(rows)
    table.to_csv(args.results.with_suffix(".csv"), index=False, float_format="%.4f")
    args.results.write_text(markdown(table, argv))
    print(args.results.read_text())


if __name__ == "__main__":
    main()
