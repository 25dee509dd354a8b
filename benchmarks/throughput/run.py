"""End-to-end picking time of one full-size tomogram (630 × 630 × 184, read → picks) per bundle.

For each bundle, the bundle's own ``inference.yaml`` is timed against the plain MONAI path in the same
run: read the MRC, ``monai.inferers.sliding_window_inference`` in fp32 with ``sw_batch_size=1`` and
the bundle's ROI / overlap / gaussian blending, then the same post-processing to picks. The number
of picks of both paths is reported, so a speed-up that changes the picks is visible.

CryoMAE (``pick_3d.yaml``, first class, exemplars from the tomogram's own picks, a seeded untrained 3D
network: speed, not quality; one test-time view, ``tta_views [0]``): its dense similarity map is one tiling of ViT
windows per token shift; the plain path runs each tiling with ``sliding_window_inference`` (fp32, ``sw_batch_size=1``, no
overlap) and interleaves them, which gives the bundle's map exactly.

    python benchmarks/throughput/run.py --data DATA --out RUNS [--bundles semietpicker sasi cryomae] [--sw-batch-size N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.inferers import sliding_window_inference

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.picks import read_picks
from cryoet_monai.data.synthetic import synthesize
from cryoet_monai.inference.exemplar import similarity_grid_shape
from cryoet_monai.runner import run_bundle

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


def bundle_path(bundle: str, config: str, manifest: Path, out: Path, overrides: dict) -> tuple[float, int]:
    """Seconds and number of picks of a bundle config (read → picks.csv)."""
    start = time.perf_counter()
    run_bundle(bundle, config, {"manifest": str(manifest), "split": "test", "output_dir": str(out), **overrides})
    return time.perf_counter() - start, len(read_picks(out / "picks.csv"))


def cryomae_inputs(manifest: Path, out: Path) -> tuple[Path, Path]:
    """A copy of the manifest whose training item is the test tomogram (exemplars come from its picks) and
    the weights of a seeded, untrained 3D CryoMAE."""
    data = json.loads(manifest.read_text())
    data["training"] = data["test"]
    copy = manifest.with_name("manifest_cryomae.json")
    copy.write_text(json.dumps(data, indent=1))
    parser = ConfigParser()
    parser.read_config(str(bundle_dir("cryomae") / "configs" / "pick_3d.yaml"))
    parser.update({"spatial_dims": 3})
    torch.manual_seed(0)
    weights = out / "cryomae_3d_untrained.pt"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
    return copy, weights


def plain_similarity_map(network, image: torch.Tensor, targets: torch.Tensor, stride: int) -> torch.Tensor:
    """The bundle's mean-cosine similarity grid, one ``sliding_window_inference`` tiling per token shift (fp32, sw_batch_size 1)."""
    patch, window = tuple(network.patch_size), tuple(network.img_size)
    spatial, shifts = tuple(image.shape[1:]), [p // stride for p in patch]
    grid = similarity_grid_shape(spatial, stride)
    windows = [math.ceil(math.ceil(g / s) / (w // p)) for g, s, w, p in zip(grid, shifts, window, patch)]
    lead = [p // 2 for p in patch]
    tail = [n * w + p - m - l for n, w, p, m, l in zip(windows, window, patch, spatial, lead)]
    padded = F.pad(image[None], [v for l, t in zip(lead[::-1], tail[::-1]) for v in (l, max(t, 0))])
    targets = F.normalize(targets, dim=-1)

    def similarity(x):
        return torch.einsum("bd...,ed->be...", F.normalize(network.encode(x), dim=1), targets).mean(dim=1, keepdim=True)

    fine = torch.zeros([n * (w // p) * s for n, w, p, s in zip(windows, window, patch, shifts)])
    for shift in itertools.product(*[range(s) for s in shifts]):
        tiled = padded[(slice(None), slice(None)) + tuple(slice(k * stride, k * stride + n * w) for k, n, w in zip(shift, windows, window))]
        out = sliding_window_inference(tiled, window, 1, similarity, overlap=0.0, mode="constant")
        fine[tuple(slice(k, None, s) for k, s in zip(shift, shifts))] = out[0, 0].cpu()
    return fine[tuple(slice(0, g) for g in grid)]


def plain_cryomae(manifest: Path, weights: Path, device: torch.device) -> tuple[float, int]:
    """Seconds and number of picks of read → exemplars → plain similarity map → the bundle's post-processing."""
    parser = ConfigParser()
    parser.read_config(str(bundle_dir("cryomae") / "configs" / "pick_3d.yaml"))
    parser.update({"manifest": str(manifest), "split": "test", "device": f"$torch.device('{device}')"})
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    network.eval()
    postprocessing = parser.get_parsed_content("postprocessing")
    item = parser.get_parsed_content("manifest_info").data_dicts("test")[0]
    start = time.perf_counter()
    exemplars = parser.get_parsed_content("exemplar_set")
    data = parser.get_parsed_content("pick_preprocessing")(item)
    with torch.no_grad():
        similarity = plain_similarity_map(network, data["image"].to(device), exemplars.embeddings(network), parser.get_parsed_content("stride"))
    picks = postprocessing({**data, "pred": similarity[None]})["pred_picks"]
    return time.perf_counter() - start, len(picks)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder for the full-size synthetic tomogram (made if missing)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundles", nargs="+", default=["semietpicker", "sasi", "cryomae"])
    parser.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass of the bundle path (default: the bundle's)")
    parser.add_argument("--results", type=Path, default=None, help="CSV to write (default: results_cpu.csv / results_gpu.csv here)")
    args = parser.parse_args(argv)
    manifest = synthesize(args.data, preset="czii", seed=0, splits={"test": 1})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
    if device.type == "cuda":  # the CUDA context is made before the clock starts, not inside the first bundle's time
        torch.zeros(1, device=device).sum().item()
    rows = []
    for bundle in args.bundles:
        if bundle == "cryomae":
            cryomae_manifest, weights = cryomae_inputs(manifest, args.out)
            # one view, as the plain path computes; the bundle default averages 16 views (16 × the time)
            overrides = {"model_path": str(weights), "tta_views": [0]} | ({"window_batch_size": args.sw_batch_size} if args.sw_batch_size else {})
            bundle_s, bundle_picks = bundle_path(bundle, "pick_3d", cryomae_manifest, args.out / bundle, overrides)
            plain_s, plain_picks = plain_cryomae(cryomae_manifest, weights, device)
        else:
            # the shipped weights as a user gets them: both paths resample the 10 Å tomogram to the voxel size their
            # models/model_info.json records (the plain path reads the same model_path through the bundle's config)
            weights = bundle_dir(bundle) / "models" / "model.pt"
            overrides = {"model_path": str(weights)} | ({"sw_batch_size": args.sw_batch_size} if args.sw_batch_size else {})
            bundle_s, bundle_picks = bundle_path(bundle, "inference", manifest, args.out / bundle, overrides)
            plain_s, plain_picks = plain_path(bundle, manifest, device)
        rows.append({"bundle": bundle, "device": name, "plain_s": round(plain_s, 1), "bundle_s": round(bundle_s, 1),
                     "speedup": round(plain_s / bundle_s, 2), "plain_picks": plain_picks, "bundle_picks": bundle_picks})
        print(rows[-1], flush=True)
    results = args.results or HERE / f"results_{'gpu' if device.type == 'cuda' else 'cpu'}.csv"
    table = pd.DataFrame(rows)
    if results.is_file():  # keep the rows of bundles not measured in this run
        earlier = pd.read_csv(results)
        table = pd.concat([earlier[~earlier["bundle"].isin(table["bundle"])], table], ignore_index=True)
    table.to_csv(results, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
