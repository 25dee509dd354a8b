"""Sphere masks from picks: radii, centres, boundaries, overlaps and the loss mask."""

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cryoet_monai.transforms.spheres import PicksToSpheres, PicksToSpheresd, render_spheres


@pytest.mark.parametrize("radius", [5.0, 7.5, 10.0])
def test_ball_volume_matches_four_thirds_pi_r_cubed(radius):
    label = render_spheres([[20, 20, 20]], [0], [radius], (41, 41, 41))
    count = int((label == 1).sum())
    assert abs(count - 4 / 3 * math.pi * radius**3) / (4 / 3 * math.pi * radius**3) < 0.05


def test_centre_labelled_and_boundary_right():
    label = render_spheres([[10, 12, 14]], [1], [1.0, 4.0], (24, 24, 24))[0]
    assert label[10, 12, 14] == 2
    assert label[10, 12, 18] == 2 and label[10, 12, 19] == 0  # distance 4 inside, 5 outside
    assert label[14, 12, 14] == 2 and label[15, 12, 14] == 0
    assert label[13, 14, 16] == 0  # distance sqrt(17) > 4
    assert set(torch.unique(label).tolist()) == {0, 2}


def test_overlap_goes_to_the_nearer_centre_relative_to_radius():
    label = render_spheres([[10, 10, 6], [10, 10, 14]], [0, 1], [5.0, 5.0], (21, 21, 21))[0]
    assert label[10, 10, 9] == 1 and label[10, 10, 11] == 2


def test_radius_from_angstrom_and_scale():
    spheres = PicksToSpheres([100.0], radius_scale=0.5)
    assert spheres.radii_voxels(10.0)[0] == pytest.approx(5.0)
    label = spheres([[15, 15, 15]], [0], (31, 31, 31), voxel_size=10.0)
    assert label[0, 15, 15, 20] == 1 and label[0, 15, 15, 21] == 0


def test_point_outside_and_bad_labels():
    assert render_spheres([[-20, 5, 5]], [0], [3.0], (10, 10, 10)).sum() == 0
    with pytest.raises(ValueError, match="class indices"):
        render_spheres([[5, 5, 5]], [2], [3.0, 3.0], (10, 10, 10))


def test_dict_twin_writes_label_and_annotated_mask_with_meta():
    image = MetaTensor(torch.zeros(1, 20, 30, 40), meta={"voxel_size": 10.0})
    d = {"image": image, "points": np.array([[10, 15, 20]], np.float32), "labels": np.array([0]), "voxel_size": 10.0,
         "annotated": [[0, 0, 0, 195, 290, 190]]}
    out = PicksToSpheresd(keys="image", radii_angstrom=[40.0])(d)
    assert out["label"].shape == (1, 20, 30, 40) and isinstance(out["label"], MetaTensor)
    assert out["label"][0, 10, 15, 20] == 1 and int((out["label"] == 1).sum()) == int((render_spheres([[10, 15, 20]], [0], [4.0], (20, 30, 40)) == 1).sum())
    assert out["loss_mask"][0, :, :, :20].all() and not out["loss_mask"][0, :, :, 20:].any()
    with pytest.raises(KeyError, match="LoadPicksd"):
        PicksToSpheresd(keys="image", radii_angstrom=[40.0])({"image": image, "voxel_size": 10.0})
