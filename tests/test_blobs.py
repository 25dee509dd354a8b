"""The zero-label blob floor finds planted balls and tells two sizes apart."""

import numpy as np

from cryoet_monai.data.picks import make_picks
from cryoet_monai.inference.blobs import BlobPicker
from cryoet_monai.visualize import classify_picks


def planted_volume(rng, shape=(40, 64, 64)):
    zz, yy, xx = np.indices(shape)
    volume = rng.normal(0, 0.3, shape).astype(np.float32)
    small = [(10, 15, 15), (30, 50, 20), (12, 48, 50)]
    large = [(22, 22, 44), (25, 45, 40)]
    for radius, centres in ((3, small), (7, large)):
        for z, y, x in centres:
            volume[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= radius**2] += 1.0
    return volume, small, large


def test_blob_picker_finds_planted_balls_by_size():
    volume, small, large = planted_volume(np.random.default_rng(0))
    voxel = 10.0
    picks = BlobPicker(["small", "large"], [30.0, 70.0], threshold_std=6.0)(volume, voxel, "TS_1")
    for name, centres, radius in (("small", small, 30.0), ("large", large, 70.0)):
        truth = np.array(centres, float)[:, ::-1] * voxel
        pred = picks.loc[picks["particle_type"] == name, ["x", "y", "z"]].to_numpy()
        pred_hit, true_hit = classify_picks(pred, truth, 0.5 * radius)
        assert true_hit.all(), f"{name}: missed {truth[~true_hit]}"
        assert pred_hit.mean() >= 0.75, f"{name}: {len(pred)} picks, {pred_hit.sum()} on particles"
    assert set(picks["experiment"]) == {"TS_1"}


def test_dark_contrast_option():
    volume, small, _ = planted_volume(np.random.default_rng(1))
    bright = BlobPicker(["small"], [30.0], threshold_std=6.0)(volume, 10.0, "a")
    dark = BlobPicker(["small"], [30.0], threshold_std=6.0, bright=False)(-volume, 10.0, "a")
    np.testing.assert_allclose(np.sort(bright["x"]), np.sort(dark["x"]))
    assert len(make_picks("a", "small", bright[["x", "y", "z"]].to_numpy())) == len(bright)
