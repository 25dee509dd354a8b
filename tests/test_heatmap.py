import math

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, SpatialCropd

from cryoet_monai.data.manifest import inside_boxes
from cryoet_monai.transforms.heatmap import (
    HeatmapToClassMap,
    HeatmapToClassMapd,
    PicksToHeatmap,
    PicksToHeatmapd,
    annotated_mask,
    class_sigmas,
    render_heatmap,
)
from cryoet_monai.transforms.views import RandWedgeViewd


def test_class_sigmas():
    assert np.allclose(class_sigmas([60, 150], 10.0), [1.5, 3.75])
    assert np.allclose(class_sigmas([60], 10.0, sigma_scale=0.5), [3.0])
    with pytest.raises(ValueError, match="radii"):
        class_sigmas([60, -1], 10.0)


def test_peak_and_sigma():
    sigma = 2.0
    hm = render_heatmap([[10, 11, 12]], [0], [sigma], (20, 22, 24), num_classes=1)
    assert hm.shape == (1, 20, 22, 24) and hm.dtype == torch.float32
    assert hm[0, 10, 11, 12] == 1.0
    assert torch.argmax(hm).item() == np.ravel_multi_index((0, 10, 11, 12), hm.shape)
    assert math.isclose(hm[0, 10, 11, 12 + 2].item(), math.exp(-0.5), rel_tol=1e-6)  # 1σ along x
    assert math.isclose(hm[0, 10 - 2, 11, 12].item(), math.exp(-0.5), rel_tol=1e-6)  # 1σ along z
    assert math.isclose(hm[0, 12, 13, 12].item(), math.exp(-1.0), rel_tol=1e-6)  # (2σ², 2 axes)
    assert hm[0, 10, 11, 12 + 7].item() == 0.0  # outside the ±3σ window
    assert hm[0, 10, 11, 12 + 6].item() > 0.0


def test_two_classes_max_not_sum_and_scores():
    pts = [[5, 5, 5], [5, 5, 7], [12, 12, 12]]
    hm = render_heatmap(pts, [0, 0, 1], [2.0, 1.0], (16, 16, 16), num_classes=2, scores=[1.0, 1.0, 0.5])
    assert hm[0, 5, 5, 5] == 1.0 and hm[0, 5, 5, 7] == 1.0  # overlapping blobs keep their peaks
    assert math.isclose(hm[0, 5, 5, 6].item(), math.exp(-1 / 8), rel_tol=1e-6)  # max of the two, not their sum
    assert hm[1, 12, 12, 12] == 0.5 and hm[1, 5, 5, 5] == 0.0 and hm[0, 12, 12, 12] == 0.0


def test_bad_labels():
    with pytest.raises(ValueError, match="class indices"):
        render_heatmap([[1, 1, 1]], [2], [1.0, 1.0], (4, 4, 4), num_classes=2)


def test_loss_mask_covers_exactly_the_box_voxels():
    vs = 10.0
    shape = (8, 9, 10)
    boxes = [[15.0, 20.0, 0.0, 40.0, 50.0, 30.0], [90.0, 80.0, 70.0, 200.0, 200.0, 200.0]]
    mask = annotated_mask(boxes, vs, shape)
    assert mask.shape == (1, *shape)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    xyz = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1) * vs
    expected = inside_boxes(xyz, boxes).reshape(shape)
    assert np.array_equal(mask[0].numpy().astype(bool), expected)
    # hand count: x in {20,30,40}, y in {20..50} -> 4, z in {0..30} -> 4; plus x=90, y=80, z=70 corner
    assert mask.sum().item() == 3 * 4 * 4 + 1
    assert torch.equal(annotated_mask(None, vs, shape), torch.ones(1, *shape))


def test_dict_transform_aligned_with_image_under_crop_and_view():
    img = MetaTensor(torch.rand(1, 12, 14, 16), affine=torch.diag(torch.tensor([10.0, 10.0, 10.0, 1.0])))
    img[0, 6, 7, 8] = 100.0  # a marker at the particle
    d = {
        "image": img,
        "points": np.array([[6.0, 7.0, 8.0]], dtype=np.float32),
        "labels": np.array([1]),
        "voxel_size": 10.0,
        "annotated": [[0.0, 0.0, 0.0, 100.0, 60.0, 50.0]],
    }
    out = PicksToHeatmapd("image", radii_angstrom=[40.0, 80.0])(d)
    hm, mask = out["heatmap"], out["loss_mask"]
    assert isinstance(hm, MetaTensor) and hm.shape == (2, 12, 14, 16) and mask.shape == (1, 12, 14, 16)
    assert torch.allclose(hm.affine, img.affine)
    assert hm[1, 6, 7, 8] == 1.0 and hm[0].max() == 0.0
    assert math.isclose(hm[1, 6, 7, 10].item(), math.exp(-0.5), rel_tol=1e-6)  # σ = 0.25·80/10 = 2
    keys = ["image", "heatmap", "loss_mask"]
    crop = SpatialCropd(keys, roi_start=(2, 3, 4), roi_end=(12, 14, 16))
    chain = Compose([crop, RandWedgeViewd(keys, views=[11], points_key=None)])
    moved = chain(out)
    image_peak = int(torch.argmax(moved["image"][0]))
    assert int(torch.argmax(moved["heatmap"][1])) == image_peak
    # the mask moved with the image: the marked voxel (x=80 Å, y=70, z=60) is outside the box (y ≤ 60)
    assert moved["loss_mask"][0].flatten()[image_peak] == 0.0
    assert moved["loss_mask"].sum() == mask[:, 2:, 3:, 4:].sum()
    assert torch.allclose(moved["heatmap"].affine, moved["image"].affine)


def test_array_transform_uses_voxel_size():
    hm = PicksToHeatmap([40.0])([[4, 4, 4]], [0], (9, 9, 9), voxel_size=5.0)
    assert math.isclose(hm[0, 4, 4, 6].item(), math.exp(-0.5), rel_tol=1e-6)  # σ = 0.25·40/5 = 2


def test_load_picks_to_voxels(tmp_path):
    from cryoet_monai.data.picks import make_picks, write_picks
    from cryoet_monai.transforms.picks import LoadPicksd

    table = make_picks("TS_1", ["ribosome", "apo"], [[100.0, 50.0, 20.0], [10.0, 20.0, 30.0]])
    other = make_picks("TS_2", "apo", [[0.0, 0.0, 0.0]])
    path = write_picks(pd.concat([table, other], ignore_index=True), tmp_path / "picks.csv")
    load = LoadPicksd("picks", classes=["apo", "ribosome"])
    d = load({"id": "TS_1", "picks": str(path), "voxel_size": 10.0})
    assert d["points"].dtype == np.float32 and d["labels"].dtype == np.int64
    assert np.allclose(d["points"], [[2.0, 5.0, 10.0], [3.0, 2.0, 1.0]])  # z, y, x voxels
    assert d["labels"].tolist() == [1, 0]
    empty = load({"id": "TS_3", "picks": None, "voxel_size": 10.0})
    assert empty["points"].shape == (0, 3) and empty["labels"].shape == (0,)
    with pytest.raises(ValueError, match="picks.csv.*'ribosome'"):
        LoadPicksd(classes=["apo"])({"id": "TS_1", "picks": str(path), "voxel_size": 10.0})
    with pytest.raises(ValueError, match="classes"):
        LoadPicksd()


def test_load_picks_keeps_only_annotated_particles(tmp_path):
    from cryoet_monai.data.picks import make_picks, write_picks
    from cryoet_monai.transforms.picks import LoadPicksd

    path = write_picks(make_picks("TS_1", ["a", "b", "a"], np.array([[100.0, 100, 100], [500, 500, 100], [120, 90, 110]])), tmp_path / "p.csv")
    data = {"id": "TS_1", "picks": str(path), "voxel_size": 10.0, "annotated": [[0, 0, 0, 200, 200, 200]]}
    out = LoadPicksd(classes=["a", "b"])(data)
    np.testing.assert_allclose(out["points"], [[10, 10, 10], [11, 9, 12]])
    assert out["labels"].tolist() == [0, 0]
    assert len(LoadPicksd(classes=["a", "b"])({**data, "annotated": None})["points"]) == 3


def test_class_map_labels_voxels_within_two_sigma_by_the_highest_class():
    sigmas = [1.0, 2.0]
    points = [[5, 5, 5], [5, 5, 13.5], [5.5, 14.5, 5.5]]  # the last two off the grid
    heatmap = MetaTensor(render_heatmap(points, [0, 1, 1], sigmas, (10, 20, 20), num_classes=2), affine=torch.eye(4) * 2)
    class_map = HeatmapToClassMap()(heatmap)
    assert class_map.shape == (1, 10, 20, 20) and class_map.dtype == torch.uint8
    assert isinstance(class_map, MetaTensor) and torch.equal(class_map.affine, heatmap.affine)
    assert class_map[0, 5, 5, 5] == 1 and class_map[0, 5, 5, 5 + 2] == 1  # 2σ of class 0
    assert class_map[0, 5, 5, 5 + 3] == 0
    assert class_map[0, 5, 5, 13] == 2 and class_map[0, 5, 5, 14] == 2 and class_map[0, 5, 5, 17] == 2  # 3.5 < 2σ = 4
    assert class_map[0, 5, 5, 18] == 0
    assert class_map[0, 5, 14, 5] == 2  # nearest voxel of an off-grid centre
    assert class_map[0, 0, 0, 19] == 0
    # where both Gaussians reach, the higher one names the voxel
    both = render_heatmap([[5, 5, 5], [5, 5, 8]], [0, 1], [2.0, 2.0], (10, 10, 12), num_classes=2)
    labels = HeatmapToClassMap()(both)[0, 5, 5]
    assert labels[6].item() == 1 and labels[7].item() == 2
    assert torch.equal(HeatmapToClassMapd(class_map_key="cm")({"heatmap": heatmap})["cm"], class_map)
    with pytest.raises(ValueError, match="min_value"):
        HeatmapToClassMap(min_value=0.0)
    with pytest.raises(ValueError, match="C, Z, Y, X"):
        HeatmapToClassMap()(torch.zeros(10, 10, 10))
