import numpy as np
import pytest
import torch

from cryoet_monai.data.picks import make_picks
from cryoet_monai.inference.peaks import find_peaks, neighbourhood_max, peaks_to_picks
from cryoet_monai.transforms.heatmap import render_heatmap

SHAPE = (24, 30, 28)


def _planted():
    points = np.array([[5, 6, 7], [12, 20, 9], [18, 8, 21], [6, 24, 20], [15, 14, 14], [3, 3, 25]], dtype=float)
    labels = np.array([0, 0, 0, 1, 1, 1])
    return points, labels


def _as_set(points, labels):
    return {(int(lab), *map(int, p)) for p, lab in zip(np.asarray(points), np.asarray(labels))}


def test_round_trip_recovers_planted_points_exactly():
    points, labels = _planted()
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.85])
    hm = render_heatmap(points, labels, [1.5, 2.5], SHAPE, num_classes=2, scores=scores)
    found, found_labels, found_scores = find_peaks(hm, min_distance=[4, 6], thresholds=0.3)
    assert found.dtype == torch.float32 and found_labels.dtype == torch.int64
    assert _as_set(found, found_labels) == _as_set(points, labels)
    assert torch.allclose(found_scores, torch.tensor(sorted(scores, reverse=True), dtype=torch.float32))
    assert torch.all(found_scores[:-1] >= found_scores[1:])


def test_saturated_plateau_gives_one_peak_per_particle():
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    hm = torch.zeros(1, *SHAPE)
    centres = [(8, 9, 8), (15, 20, 19)]
    for cz, cy, cx in centres:  # saturated balls of radius 6, as a float32 sigmoid gives on a ribosome
        hm[0][torch.from_numpy((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 36)] = 1.0
    found, labels, scores = find_peaks(hm, min_distance=6, thresholds=0.5)
    assert len(found) == 2
    assert _as_set(found, labels) == {(0, *c) for c in centres}
    assert torch.all(scores == 1.0)
    half, _, _ = find_peaks(hm, min_distance=3, thresholds=0.5)  # plateau radius = 2 × min_distance
    assert _as_set(half, [0, 0]) == {(0, *c) for c in centres}
    # without tie-breaking smoothing, distance suppression alone still keeps plateaus apart by > min_distance
    plain, _, _ = find_peaks(hm, min_distance=6, thresholds=0.5, smoothing=0.0)
    assert len(plain) > 2
    assert torch.cdist(plain, plain).add(torch.eye(len(plain)) * 99).min() > 6


def test_min_distance_suppression_and_max_peaks():
    points = np.array([[10, 10, 10], [10, 10, 14], [10, 10, 22]], dtype=float)
    hm = render_heatmap(points, [0, 0, 0], [1.0], SHAPE, num_classes=1, scores=[1.0, 0.9, 0.8])
    near, _, _ = find_peaks(hm, min_distance=3, thresholds=0.1)
    assert len(near) == 3
    far, _, scores = find_peaks(hm, min_distance=5, thresholds=0.1)  # the 0.9 peak lies 4 voxels from the 1.0 peak
    assert _as_set(far, [0, 0]) == {(0, 10, 10, 10), (0, 10, 10, 22)}
    top, _, _ = find_peaks(hm, min_distance=3, thresholds=0.1, max_peaks=1)
    assert top.tolist() == [[10.0, 10.0, 10.0]]


def test_per_class_thresholds():
    points, labels = _planted()
    scores = np.array([0.9, 0.4, 0.7, 0.95, 0.6, 0.35])
    hm = render_heatmap(points, labels, [1.5, 1.5], SHAPE, num_classes=2, scores=scores)
    found, found_labels, _ = find_peaks(hm, min_distance=3, thresholds=[0.5, 0.3])
    expected = {(int(lab), *map(int, p)) for p, lab, s in zip(points, labels, scores) if s >= (0.5, 0.3)[lab]}
    assert _as_set(found, found_labels) == expected and len(expected) == 5
    with pytest.raises(ValueError, match="thresholds"):
        find_peaks(hm, min_distance=3, thresholds=[0.5, 0.3, 0.1])
    empty = find_peaks(hm, min_distance=3, thresholds=2.0)
    assert empty[0].shape == (0, 3) and empty[1].shape == (0,) and empty[2].shape == (0,)


def test_peak_at_the_border_stays():
    hm = render_heatmap([[0, 0, 5]], [0], [2.0], SHAPE, num_classes=1)
    found, _, _ = find_peaks(hm, min_distance=4, thresholds=0.5)
    assert found.tolist() == [[0.0, 0.0, 5.0]]


def test_picks_round_trip_angstrom_voxel():
    points, labels = _planted()
    scores = np.linspace(1, 0.5, len(points))
    picks = peaks_to_picks(torch.from_numpy(points), labels, scores, ["apo", "ribo"], 10.012, "TS_5_4")
    assert list(picks.columns) == ["experiment", "particle_type", "x", "y", "z", "score"]
    assert picks["particle_type"].tolist() == ["apo"] * 3 + ["ribo"] * 3
    assert np.allclose(picks[["x", "y", "z"]].to_numpy(), points[:, ::-1] * 10.012)
    assert np.allclose(picks[["z", "y", "x"]].to_numpy() / 10.012, points)
    expected = make_picks("TS_5_4", "apo", [[7 * 10.012, 6 * 10.012, 5 * 10.012]], 1.0)
    assert picks.iloc[:1].equals(expected)
    with pytest.raises(ValueError, match="class names"):
        peaks_to_picks(points, labels + 1, np.ones(6), ["apo", "ribo"], 10.0, "TS")


def test_picking_at_a_threshold_equals_filtering_low_threshold_picks():
    # thresholds are tuned by picking once at a low threshold and filtering by score; deployment picks at the
    # tuned threshold, so both must give the same peaks on a noisy map
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand((1, 40, 40, 40), generator=generator)
    hm = torch.nn.functional.avg_pool3d(noise[None], kernel_size=3, stride=1, padding=1)[0]
    low, low_labels, low_scores = find_peaks(hm, min_distance=3, thresholds=0.0)
    for threshold in np.quantile(low_scores.numpy(), [0.1, 0.5, 0.9]):
        kept = low_scores >= float(threshold)
        found, found_labels, _ = find_peaks(hm, min_distance=3, thresholds=float(threshold))
        assert _as_set(found, found_labels) == _as_set(low[kept], low_labels[kept])


@pytest.mark.parametrize("shape", [(5, 7, 6), (1, 4, 3), (2, 3, 4, 5, 1)])
def test_neighbourhood_max_equals_max_pooling(shape):
    volume = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    volume.view(-1)[::7] = 2.0  # ties
    batched = volume.reshape(-1, *shape[-3:])
    expected = torch.nn.functional.max_pool3d(batched, kernel_size=3, stride=1, padding=1).reshape(shape)
    assert torch.equal(neighbourhood_max(volume), expected)
