"""Crop-centre ratios: full shares, shares in proportion below the cap, particle : background kept."""

import pytest

from cryoet_monai.data import crop_class_ratios


def test_every_labeled_class_a_full_share_by_default():
    # 3 labeled classes, 2 particle crops per background crop -> background 1.5; the unlabeled class gets none
    assert crop_class_ratios([2, 0, 40, 1], (2, 1)) == [1.5, 1.0, 0.0, 1.0, 1.0]


def test_classes_below_the_cap_get_shares_in_proportion():
    ratios = crop_class_ratios([2, 1, 6, 5, 0], (2, 1), full_share_particles=5)
    assert ratios[1:] == pytest.approx([0.4, 0.2, 1.0, 1.0, 0.0])
    assert sum(ratios[1:]) / ratios[0] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "counts, pos_neg, cap, message",
    [([0, 0], (2, 1), None, "no class has labeled"), ([3], (2, 1), 0, "at least 1"), ([3], (0, 1), None, "pos_neg_ratio")],
)
def test_bad_settings_are_named(counts, pos_neg, cap, message):
    with pytest.raises(ValueError, match=message):
        crop_class_ratios(counts, pos_neg, cap)
