"""Masked heatmap losses: the mask hides unknown space, peaks normalise, good predictions score lower."""

import pytest
import torch

from cryoet_monai.losses import HeatmapBCELoss, HeatmapFocalLoss, HeatmapMSELoss, target_peaks
from cryoet_monai.transforms.heatmap import render_heatmap

LOSSES = [HeatmapFocalLoss, HeatmapMSELoss, HeatmapBCELoss]


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


# BCE on soft targets cannot go below the targets' entropy, hence its larger ratio
@pytest.mark.parametrize("loss_class, ratio", [(HeatmapFocalLoss, 0.2), (HeatmapMSELoss, 0.2), (HeatmapBCELoss, 0.3)])
def test_good_prediction_beats_shifted_one(loss_class, ratio):
    target = _target([((5, 6, 7), 0)])
    good = torch.logit(target.clamp(1e-4, 1 - 1e-4))
    shifted = torch.roll(good, shifts=3, dims=-1)
    loss = loss_class()
    assert loss(good, target) < ratio * loss(shifted, target)


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


def test_bce_gradient_at_a_missed_centre_does_not_fade_at_the_prior():
    target = _target([((5, 6, 7), 0)])
    grads = {}
    for loss_class in (HeatmapMSELoss, HeatmapBCELoss):
        pred = torch.full((1, 2, 12, 16, 16), float(torch.logit(torch.tensor(0.01))), requires_grad=True)
        loss_class()(pred, target).backward()
        grads[loss_class] = -pred.grad[0, 0, 5, 6, 7].item()
    # d/dlogit at the centre: MSE 2 * 11 * 0.99 * 0.01 * 0.99 ≈ 0.22, BCE 11 * 0.99 ≈ 10.9 (one peak: no normalisation)
    assert grads[HeatmapMSELoss] == pytest.approx(0.2134, rel=0.02)
    assert grads[HeatmapBCELoss] == pytest.approx(10.89, rel=0.02)


@pytest.mark.parametrize("loss_class", [HeatmapMSELoss, HeatmapBCELoss])
def test_per_class_pos_weight_weighs_each_class_channel(loss_class):
    target = _target([((3, 4, 5), 0), ((8, 11, 10), 1)])
    pred = torch.full((1, 2, 12, 16, 16), -3.0)  # both particles missed
    scalar, per_class = loss_class(pos_weight=10.0), loss_class(pos_weight=[10.0, 10.0])
    assert torch.isclose(scalar(pred, target), per_class(pred, target))
    # raising class 1's weight adds exactly its weighted error, in channel 1 only (normalised by both peaks)
    heavier = loss_class(pos_weight=[10.0, 50.0])(pred, target) - per_class(pred, target)
    channel_1 = loss_class(pos_weight=40.0)(pred[:, 1:], target[:, 1:]) - loss_class(pos_weight=0.0)(pred[:, 1:], target[:, 1:])
    assert heavier > 0 and torch.isclose(heavier, channel_1 / 2)
    with pytest.raises(ValueError, match="3 values for 2 classes"):
        loss_class(pos_weight=[1.0, 2.0, 3.0])(pred, target)
    with pytest.raises(ValueError, match="non-negative"):
        loss_class(pos_weight=[1.0, -2.0])
