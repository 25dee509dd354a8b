"""Disc-mask centres: exact for isolated discs, separated for touching ones; real EMPIAR masks when present."""

import numpy as np
from skimage.draw import disk

from cryoet_monai.data.masks import disc_centres


def draw(centres_xy, radius, shape=(300, 400)):
    mask = np.zeros(shape, bool)
    for x, y in centres_xy:
        mask[disk((y, x), radius, shape=shape)] = True
    return mask


def matched(found, planted, tol):
    dist = np.linalg.norm(found[:, None, :] - np.asarray(planted)[None, :, :], axis=-1)
    return dist.min(axis=0) <= tol


def test_isolated_discs_give_exact_centres():
    planted = [(60, 70), (200, 150), (330, 230)]
    found = disc_centres(draw(planted, 20), 20)
    assert len(found) == 3
    assert matched(found, planted, 0.5).all()


def test_touching_discs_are_separated():
    planted = [(100, 100), (137, 100), (118, 133)]  # radius-20 discs touching/overlapping slightly, like packed particles
    found = disc_centres(draw(planted, 20), 20)
    assert len(found) == 3
    assert matched(found, planted, 2.0).all()


def test_real_empiar_mask(shared_data):
    from PIL import Image

    mask = np.asarray(Image.open(shared_data / "empiar10017_micrographs/masks/Falcon_2012_06_12-15_07_41_0_mask.jpg"))
    centres = disc_centres(mask, 54)
    assert 300 < len(centres) < 800
    inside = mask[centres[:, 1].round().astype(int), centres[:, 0].round().astype(int)] > 127
    assert inside.all()
