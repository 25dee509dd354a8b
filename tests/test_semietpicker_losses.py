"""Masked heatmap losses: the mask hides unknown space, peaks normalise, good predictions score lower."""

import pytest
import torch

from cryoet_monai.losses import HeatmapFocalLoss, HeatmapMSELoss, target_peaks
from cryoet_monai.transforms.heatmap import render_heatmap

LOSSES = [HeatmapFocalLoss, HeatmapMSELoss]


def _target(points, shape=(12, 16, 16), num_classes=2):
    labels = [label for _, label in points]
    return render_heatmap([p for p, _ in points], labels, [1.0] * num_classes, shape, num_classes)[None]


@pytest.mark.parametrize("loss_class", LOSSES)
def test_prediction_outside_mask_changes_nothing(loss_class):
    target = _target([((3, 4, 5), 0), ((9, 10, 11), 1)])
    mask = torch.zeros(1, 1, 12, 16, 16)
    mask[:, :, :7] = 1
    pred = torch.randn(1, 2, 12, 16, 16)
    changed = pred.clone()
    changed[:, :, 7:] = torch.randn(1, 2, 5, 16, 16) * 10
    loss = loss_class()
    assert torch.isclose(loss(pred, target, mask), loss(changed, target, mask))
    inside = pred.clone()
    inside[:, :, :7] += 3
    assert not torch.isclose(loss(pred, target, mask), loss(inside, target, mask))


@pytest.mark.parametrize("loss_class", LOSSES)
def test_mask_as_last_label_channel_equals_explicit_mask(loss_class):
    target = _target([((3, 4, 5), 0)])
    mask = (torch.rand(1, 1, 12, 16, 16) > 0.3).float()
    pred = torch.randn(1, 2, 12, 16, 16)
    explicit = loss_class()(pred, target, mask)
    packed = loss_class(mask_channel=True)(pred, torch.cat([target, mask], 1))
    assert torch.isclose(explicit, packed)


@pytest.mark.parametrize("loss_class", LOSSES)
def test_good_prediction_beats_shifted_one(loss_class):
    target = _target([((5, 6, 7), 0)])
    good = torch.logit(target.clamp(1e-4, 1 - 1e-4))
    shifted = torch.roll(good, shifts=3, dims=-1)
    loss = loss_class()
    assert loss(good, target) < 0.2 * loss(shifted, target)


def test_focal_loss_normalises_by_peaks_inside_mask():
    one = _target([((3, 4, 4), 0)])
    two = _target([((3, 4, 4), 0), ((8, 12, 12), 0)])
    assert target_peaks(two).sum() == 2
    pred = torch.full((1, 2, 12, 16, 16), -4.0)
    loss = HeatmapFocalLoss()
    # twice the particles, twice the positive loss, same mean per particle (background is ~0)
    assert torch.isclose(loss(pred, one), loss(pred, two), rtol=0.05)


def test_off_grid_centre_is_still_a_peak():
    target = _target([((5.5, 6.5, 7.5), 0)])
    assert target.max() < 1 and target_peaks(target).any()
