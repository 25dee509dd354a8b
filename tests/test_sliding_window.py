"""Whole-tomogram sliding window: where the output is stitched, and mixed precision that keeps the picks."""

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer, sliding_window_inference

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.synthetic import synthesize
from cryoet_monai.inference.postprocess import HeatmapToPicks
from cryoet_monai.inference.sliding_window import EXTRA_VOLUMES, Autocast, TomogramInferer, heatmap_inferer, stitch_device

GIB = 1024**3


def needed_bytes(shape, channels, copies=1):
    return 4 * int(np.prod(shape)) * (channels * copies + EXTRA_VOLUMES)


def test_stitch_device_keeps_the_output_on_the_gpu_only_when_it_fits():
    shape, gpu = (184, 630, 630), torch.device("cuda", 0)
    need = needed_bytes(shape, 6)
    assert stitch_device(shape, 6, gpu, free_bytes=80 * GIB) == gpu
    assert stitch_device(shape, 6, gpu, free_bytes=need) == torch.device("cpu"), "no headroom left for the network"
    assert stitch_device(shape, 6, gpu, headroom=0.0, free_bytes=need) == gpu
    assert stitch_device(shape, 6, gpu, headroom=0.25, free_bytes=int(need / 0.75) + 1) == gpu
    assert stitch_device(shape, 6, gpu, headroom=0.25, free_bytes=int(need / 0.75) - 1024) == torch.device("cpu")
    fits_once = int(needed_bytes(shape, 6, 2) / 0.75) - 1024
    assert stitch_device(shape, 6, gpu, free_bytes=fits_once) == gpu
    assert stitch_device(shape, 6, gpu, output_copies=2, free_bytes=fits_once) == torch.device("cpu"), "views double the output"
    assert stitch_device(shape, 6, "cpu", free_bytes=80 * GIB) == torch.device("cpu")
    with pytest.raises(ValueError, match="headroom"):
        stitch_device(shape, 6, gpu, headroom=1.0, free_bytes=80 * GIB)


def test_auto_placement_on_a_cpu_stitches_on_the_cpu_and_matches_monai():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    x = torch.randn(1, 1, 20, 40, 36)
    inferer = heatmap_inferer([16, 16, 16], sw_batch_size=3, sw_device="cpu", device="auto", out_channels=2)
    assert isinstance(inferer, TomogramInferer) and inferer.output_device(x) == torch.device("cpu")
    with torch.no_grad():
        out = inferer(x, net)
        plain = sliding_window_inference(x, [16, 16, 16], 1, net, overlap=0.25, mode="gaussian")
    torch.testing.assert_close(out, plain)


def test_autocast_runs_the_network_in_low_precision_and_returns_float32():
    seen = []

    def network(x):
        y = torch.nn.functional.linear(x, torch.ones(3, 4))
        seen.append(y.dtype)
        return y

    out = Autocast(network, "cpu")(torch.randn(2, 4))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    with pytest.raises(ValueError, match="amp_dtype"):
        TomogramInferer([8, 8, 8], amp=True, amp_dtype="float8")


def matched(a, b, min_distance: dict) -> np.ndarray:
    """For each pick of ``a``: is a pick of the same class of ``b`` within that class's suppression distance?"""
    found = []
    for _, row in a.iterrows():
        other = b[b["particle_type"] == row["particle_type"]][["x", "y", "z"]].to_numpy(float)
        dist = np.linalg.norm(other - row[["x", "y", "z"]].to_numpy(float), axis=1).min() if len(other) else np.inf
        found.append(dist <= min_distance[row["particle_type"]])
    return np.asarray(found, dtype=bool)


def test_planted_blobs_give_the_same_picks_with_amp_on_the_cpu():
    """A fixed blob detector (Gaussian-weighted conv) over a volume with planted particles, several overlapping windows."""
    rng = np.random.default_rng(0)
    shape, centres = (40, 72, 72), []
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    volume = rng.normal(0, 0.3, shape)
    while len(centres) < 12:
        c = rng.uniform([6, 6, 6], np.asarray(shape) - 6)
        if all(np.linalg.norm(c - o) > 12 for o in centres):
            centres.append(c)
            volume += 2.0 * np.exp(-((grid - c) ** 2).sum(-1) / (2 * 3.0**2))
    kernel = torch.exp(-(torch.arange(-3, 4.0)[:, None, None] ** 2 + torch.arange(-3, 4.0)[:, None] ** 2 + torch.arange(-3, 4.0) ** 2) / 8)
    net = torch.nn.Conv3d(1, 1, 7, padding=3)
    with torch.no_grad():
        net.weight.copy_(kernel / kernel.sum() * 8)
        net.bias.fill_(-4.0)
    x = torch.as_tensor(volume, dtype=torch.float32)[None, None]
    to_picks = HeatmapToPicks(["blob"], [30.0], thresholds=0.5, nms_radius_scale=0.75)
    picks = {}
    for amp in (False, True):
        inferer = heatmap_inferer([24, 32, 32], sw_batch_size=2, sw_device="cpu", out_channels=1, amp=amp)
        with torch.no_grad():
            picks[amp] = to_picks(inferer(x, net)[0], "t", voxel_size=10.0)
    assert len(picks[False]) == len(centres), "the detector must find the planted particles"
    assert len(picks[True]) == len(picks[False])
    assert matched(picks[True], picks[False], {"blob": 0.75 * 30.0}).all()


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("tiny"), preset="tiny", seed=0, progress=False)


def test_semietpicker_bundle_picks_with_amp_on_the_cpu(tiny_manifest):
    """The shipped SemiETPicker model with the bundle's inferer: every confident pick (p ≥ 0.2) survives amp within the NMS distance."""
    parser = ConfigParser()
    parser.read_config(str(bundle_dir("semietpicker") / "configs" / "inference.yaml"))
    parser.update({"manifest": str(tiny_manifest), "split": "test", "device": "$torch.device('cpu')", "roi_size": [32, 32, 32]})
    assert parser.get_parsed_content("amp") is False, "amp is off by default on a CPU"
    network = parser.get_parsed_content("network").eval()
    network.load_state_dict(torch.load(parser.get_parsed_content("model_path"), map_location="cpu", weights_only=True))
    item = parser.get_parsed_content("preprocessing")(parser.get_parsed_content("manifest_info").data_dicts("test")[0])
    postprocessing = parser.get_parsed_content("postprocessing")
    min_distance = {n: 0.75 * r for n, r in zip(parser.get_parsed_content("class_names"), parser.get_parsed_content("radii_angstrom"))}
    picks = {}
    for amp in (False, True):
        parser["amp"] = amp
        inferer = parser.get_parsed_content("inferer", lazy=False)
        with torch.no_grad():
            pred = inferer(item["image"][None], network)[0]
        picks[amp] = postprocessing({**item, "pred": pred})["pred_picks"]
    confident = {amp: p[p["score"] >= 0.2] for amp, p in picks.items()}
    assert len(confident[False]) >= 3, "the shipped model must find particles in the tiny tomogram"
    assert matched(confident[False], picks[True], min_distance).all()
    assert matched(confident[True], picks[False], min_distance).all()


def test_slab_buffered_stitching_matches_plain_stitching():
    """The CPU fallback from a GPU buffers one slab of windows at a time (MONAI ``buffer_steps=1``): same output."""
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1).eval()
    x = torch.randn(1, 1, 40, 70, 52)
    inferer = TomogramInferer([32, 32, 32], sw_batch_size=4, overlap=0.25, mode="gaussian", device="cpu")
    with torch.no_grad():
        plain = inferer(x, net)
        buffered = SlidingWindowInferer([32, 32, 32], 4, overlap=0.25, mode="gaussian", device="cpu", buffer_steps=1)(x, net)
    torch.testing.assert_close(buffered, plain)
