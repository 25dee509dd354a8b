"""Segmentation logits → picks: cc3d components recover planted centroids; the size filter drops specks."""

import numpy as np
import pandas as pd
import pytest
import torch

from cryoet_monai.inference.components import SegmentationToPicks, SegmentationToPicksd, ball_volume
from cryoet_monai.transforms.spheres import render_spheres

VOXEL = 10.0


def _logits(label_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    one_hot = torch.nn.functional.one_hot(label_map[0].long(), num_classes + 1).permute(3, 0, 1, 2).float()
    return 8.0 * one_hot


def test_planted_centroids_recovered_in_angstrom():
    points = np.array([[10.3, 12.0, 30.7], [20.0, 40.2, 12.5], [24.0, 20.0, 40.0]])
    labels = np.array([0, 1, 1])
    logits = _logits(render_spheres(points, labels, [3.0, 5.0], (32, 48, 56)), 2)
    picks = SegmentationToPicks(["small", "big"], [30.0, 50.0], min_size_fraction=0.3)(logits, "TS_1", VOXEL)
    assert len(picks) == 3 and set(picks["experiment"]) == {"TS_1"}
    for (z, y, x), label in zip(points, labels):
        rows = picks[picks["particle_type"] == ["small", "big"][label]]
        dist = np.sqrt((rows["x"] - x * VOXEL) ** 2 + (rows["y"] - y * VOXEL) ** 2 + (rows["z"] - z * VOXEL) ** 2)
        assert dist.min() < 0.5 * VOXEL
    assert picks["score"].between(0.99, 1.0).all()


def test_size_filter_drops_specks_and_separate_balls_stay_separate():
    label = render_spheres([[10, 10, 10], [10, 10, 22]], [0, 0], [4.0], (21, 21, 33))
    label[0, 2, 2, 2] = 1  # a one-voxel speck of the same class
    to_picks = SegmentationToPicks(["a"], [40.0], min_size_fraction=0.1)
    assert to_picks.min_sizes(VOXEL)[0] == pytest.approx(0.1 * ball_volume(4.0))
    picks = to_picks(_logits(label, 1), "t", VOXEL)
    assert len(picks) == 2
    assert sorted(picks["x"].round().tolist()) == [100.0, 220.0]


def test_diagonal_neighbours_are_one_component():
    label = torch.zeros(1, 8, 8, 8)
    label[0, 2, 2, 2] = label[0, 3, 3, 3] = 1  # touching only at a corner: 26-connected
    picks = SegmentationToPicks(["a"], [10.0], min_size_fraction=0.0)(_logits(label, 1), "t", 1.0)
    assert len(picks) == 1 and picks["x"].iloc[0] == pytest.approx(2.5)


def test_dict_twin_and_empty_prediction():
    to_picks = SegmentationToPicksd(keys="pred", class_names=["a", "b"], radii_angstrom=[30.0, 50.0])
    out = to_picks({"pred": torch.zeros(3, 8, 8, 8).index_fill_(0, torch.tensor([0]), 5.0), "id": "t", "voxel_size": torch.tensor([10.0])})
    assert isinstance(out["pred_picks"], pd.DataFrame) and len(out["pred_picks"]) == 0
    assert list(out["pred_picks"].columns) == ["experiment", "particle_type", "x", "y", "z", "score"]
    with pytest.raises(ValueError, match="channels"):
        to_picks({"pred": torch.zeros(2, 8, 8, 8), "id": "t", "voxel_size": 10.0})
