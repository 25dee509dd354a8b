"""Picking pieces: view-averaged sliding windows, heatmap → picks in Å, per-class threshold tuning."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import make_picks, write_picks
from cryoet_monai.data.readers import write_mrc
from cryoet_monai.inference.postprocess import HeatmapToPicks
from cryoet_monai.inference.sliding_window import ViewAveragingInferer, heatmap_inferer
from cryoet_monai.inference.thresholds import apply_thresholds, load_thresholds, precision_thresholds, save_thresholds, tune_thresholds
from cryoet_monai.transforms.heatmap import render_heatmap


def test_view_averaging_is_exact_for_equivariant_network_and_maps_back():
    image = torch.randn(1, 1, 8, 16, 16)
    inferer = heatmap_inferer(roi_size=(8, 8, 8), overlap=0.5, mode="constant", views=[0, 1, 5, 9, 14], sw_device="cpu")
    assert isinstance(inferer, ViewAveragingInferer)
    assert torch.allclose(inferer(image, lambda x: 2 * x), 2 * image, atol=1e-5)

    def left_half_only(x):
        out = x.clone()
        out[..., x.shape[-1] // 2 :] = 0
        return out

    # each view sees a different half; the average maps every half back to where it came from
    averaged = ViewAveragingInferer(lambda x, net: net(x), views=[0, 1])(image, left_half_only)
    assert torch.allclose(averaged, image / 2)


def test_heatmap_to_picks_finds_peaks_and_plateaus_once_in_angstrom():
    shape = (12, 20, 20)
    heat = render_heatmap([(3, 4, 5), (8, 15, 14)], [0, 0], [1.5, 1.5], shape, 2)
    logits = 12 * heat - 6
    logits[1] = -10
    logits[1, 4:9, 5:10, 5:10] = 30.0  # a saturated plateau: one particle, not 125
    picks = HeatmapToPicks(["a", "b"], [40.0, 40.0], thresholds=[0.5, 0.5])(logits, "tomo", voxel_size=10.0)
    a = picks[picks.particle_type == "a"].sort_values("z")
    assert a[["x", "y", "z"]].to_numpy().tolist() == [[50.0, 40.0, 30.0], [140.0, 150.0, 80.0]]
    assert (picks.particle_type == "b").sum() == 1
    assert picks.score.between(0.5, 1.0).all() and (picks.experiment == "tomo").all()
    strict = HeatmapToPicks(["a", "b"], [40.0, 40.0], thresholds=[0.999, 0.5])(logits, "tomo", voxel_size=10.0)
    assert (strict.particle_type == "a").sum() == 0


def test_suppression_across_classes_keeps_the_stronger_class_at_a_place():
    shape = (12, 30, 30)
    # class a: strong at P and alone at Q; class b: weaker at P (fires on the same particle) and alone at R
    a = render_heatmap([(6, 8, 8), (6, 22, 22)], [0, 0], [1.5], shape, 1)[0] * 0.9
    b = render_heatmap([(6, 9, 8), (6, 8, 22)], [0, 0], [1.5], shape, 1)[0] * 0.7
    logits = torch.logit(torch.stack([a, b]).clamp(1e-4, 1 - 1e-4))
    per_class = HeatmapToPicks(["a", "b"], [40.0, 40.0], thresholds=0.5)(logits, "tomo", voxel_size=10.0)
    assert sorted(per_class.particle_type) == ["a", "a", "b", "b"]
    joint = HeatmapToPicks(["a", "b"], [40.0, 40.0], thresholds=0.5, across_classes=True)(logits, "tomo", voxel_size=10.0)
    assert sorted(joint.particle_type) == ["a", "a", "b"]
    assert joint[joint.particle_type == "b"][["x", "y"]].to_numpy().tolist() == [[220.0, 80.0]]  # the lone b survives


def test_tune_thresholds_separates_true_from_false_picks(tmp_path):
    write_mrc(tmp_path / "t.mrc", np.zeros((10, 30, 30), np.float32), 10.0)
    truth = np.array([[50.0, 50.0, 50.0], [200.0, 200.0, 50.0]])
    write_picks(make_picks("t", "a", truth), tmp_path / "t.csv")
    manifest = {"name": "m", "ndim": 3, "voxel_size": 10.0, "classes": [{"name": "a", "radius": 40.0}, {"name": "b", "radius": 40.0}],
                "validation": [{"id": "t", "image": "t.mrc", "picks": "t.csv"}]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    false = np.array([[120.0, 120.0, 50.0], [250.0, 60.0, 50.0], [60.0, 250.0, 50.0]])
    picks = make_picks("t", "a", np.vstack([truth, false]), score=[0.9, 0.8, 0.3, 0.2, 0.1])
    thresholds, result = tune_thresholds(picks, load_manifest(tmp_path / "m.json"), "validation")
    assert 0.3 < thresholds["a"] <= 0.8
    assert result["classes"]["a"]["f1"] == pytest.approx(1.0)
    assert len(apply_thresholds(picks, thresholds)) == 2
    path = save_thresholds(thresholds, tmp_path / "thresholds.json")
    assert load_thresholds(path, ["a", "c"], default=0.4) == [pytest.approx(thresholds["a"]), 0.4]


def test_precision_thresholds_take_the_lowest_cut_that_keeps_half_the_picks_right(tmp_path):
    write_mrc(tmp_path / "t.mrc", np.zeros((10, 30, 30), np.float32), 10.0)
    truth = np.array([[50.0, 50.0, 50.0], [200.0, 200.0, 50.0], [120.0, 220.0, 50.0]])
    write_picks(make_picks("t", "a", truth), tmp_path / "t.csv")
    manifest = {"name": "m", "ndim": 3, "voxel_size": 10.0, "classes": [{"name": "a", "radius": 40.0}, {"name": "b", "radius": 40.0}],
                "validation": [{"id": "t", "image": "t.mrc", "picks": "t.csv"}]}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    false = np.array([[120.0, 120.0, 50.0], [250.0, 60.0, 50.0], [60.0, 250.0, 50.0], [280.0, 280.0, 50.0]])
    # by score: hit 0.9, false 0.8, hit 0.6, false 0.5, 0.4, 0.35, hit 0.2 -> precision 1, 1/2, 2/3, 2/4, 2/5, 2/6, 3/7
    a = make_picks("t", "a", np.vstack([truth[:2], false, truth[2:]]), score=[0.9, 0.6, 0.8, 0.5, 0.4, 0.35, 0.2])
    b = make_picks("t", "b", false[:3], score=[0.9, 0.7, 0.5])  # class b has no truth: never precise
    chosen = precision_thresholds(pd.concat([a, b]), load_manifest(tmp_path / "m.json"), candidates=[0.1, 0.3, 0.45, 0.55, 0.7, 0.85])
    assert chosen == {"a": 0.45, "b": None}  # 0.45 keeps 4 picks, 2 hits; 0.3 keeps 6 with 2 hits; 0.1 all 7 with 3
    assert precision_thresholds(a, load_manifest(tmp_path / "m.json"), min_precision=0.6, candidates=[0.1, 0.3, 0.45, 0.55])["a"] == 0.55
