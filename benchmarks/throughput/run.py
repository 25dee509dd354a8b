"""End-to-end picking time of one full-size tomogram (630 × 630 × 184, read → picks) per bundle.

For each bundle, the bundle's own ``inference.yaml`` is timed against the plain MONAI path in the same
run: read the MRC, ``monai.inferers.sliding_window_inference`` in fp32 with ``sw_batch_size=1`` and
the bundle's ROI / overlap / gaussian blending, then the same post-processing to picks. The number
of picks of both paths is reported, so a speed-up that changes the picks is visible.

    python benchmarks/throughput/run.py --data DATA --out RUNS [--bundles semietpicker sasi]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
import torch
from monai.bundle import ConfigParser
from monai.inferers import sliding_window_inference

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.cli import run_bundle
from cryoet_monai.data.picks import read_picks
from cryoet_monai.data.synthetic import synthesize

HERE = Path(__file__).resolve().parent


def plain_path(bundle: str, manifest: Path, device: torch.device) -> tuple[float, int]:
    """Seconds and number of picks of read → plain sliding window (fp32, sw_batch_size 1) → the bundle's post-processing."""
    parser = ConfigParser()
    parser.read_config(str(bundle_dir(bundle) / "configs" / "inference.yaml"))
    parser.update({"manifest": str(manifest), "split": "test", "bundle_root": str(bundle_dir(bundle)), "device": f"$torch.device('{device}')"})
    network = parser.get_parsed_content("network")
    state = torch.load(parser.get_parsed_content("model_path"), map_location=device, weights_only=True)
    network.load_state_dict(state.get("model", state))
    network.eval()
    preprocessing = parser.get_parsed_content("preprocessing")
    postprocessing = parser.get_parsed_content("postprocessing")
    item = parser.get_parsed_content("manifest_info").data_dicts("test")[0]
    start = time.perf_counter()
    data = preprocessing(item)
    with torch.no_grad():
        pred = sliding_window_inference(
            data["image"][None].to(device), parser.get_parsed_content("roi_size"), 1, network, overlap=parser.get_parsed_content("overlap"), mode="gaussian"
        )[0].cpu()
    picks = postprocessing({**data, "pred": pred})[parser.get_parsed_content("postprocessing#picks_key", default="pred_picks")]
    return time.perf_counter() - start, len(picks)


def bundle_path(bundle: str, manifest: Path, out: Path) -> tuple[float, int]:
    """Seconds and number of picks of the bundle's inference.yaml (read → picks.csv)."""
    start = time.perf_counter()
    run_bundle(bundle, "inference", {"manifest": str(manifest), "split": "test", "output_dir": str(out)})
    return time.perf_counter() - start, len(read_picks(out / "picks.csv"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder for the full-size synthetic tomogram (made if missing)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundles", nargs="+", default=["semietpicker", "sasi"])
    args = parser.parse_args(argv)
    manifest = synthesize(args.data, preset="czii", seed=0, splits={"test": 1})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
    rows = []
    for bundle in args.bundles:
        bundle_s, bundle_picks = bundle_path(bundle, manifest, args.out / bundle)
        plain_s, plain_picks = plain_path(bundle, manifest, device)
        rows.append({"bundle": bundle, "device": name, "plain_s": round(plain_s, 1), "bundle_s": round(bundle_s, 1),
                     "speedup": round(plain_s / bundle_s, 2), "plain_picks": plain_picks, "bundle_picks": bundle_picks})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    suffix = "gpu" if device.type == "cuda" else "cpu"
    table.to_csv(HERE / f"results_{suffix}.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
