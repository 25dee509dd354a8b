"""Gold beads kept out of picks and pseudo-labels: the mask on a simulated tomogram, the picks and pseudo-particles dropped."""

import numpy as np
import pytest
from scipy import ndimage
import torch

from cryoet_monai.data import phantoms
from cryoet_monai.data.microscope import Microscope, simulate_tomogram
from cryoet_monai.data.synthetic import ice_texture
from cryoet_monai.engines import MultiViewPseudoLabeler
from cryoet_monai.inference.postprocess import HeatmapToPicks
from cryoet_monai.transforms.dense_outliers import DropDenseOutlierPicks, DropDenseOutlierPicksd, dense_outlier_mask
from cryoet_monai.transforms.heatmap import render_heatmap

VOXEL = 20.0
PARTICLES = {"ribosome": (24, 20, 20), "apo-ferritin": (24, 20, 44), "thyroglobulin": (24, 44, 20)}  # voxel (z, y, x)
GOLD = (24, 44, 44)


@pytest.fixture(scope="module")
def tomogram():
    """A 48 × 64 × 64 tomogram (±60° tilt series, CTF, noise, back-projection) of ice with three proteins and one 10-nm gold bead."""
    potential = np.zeros((48, 64, 64), np.float32)
    rng = np.random.default_rng(0)
    for name, centre in PARTICLES.items():
        phantoms.render_particle(potential, name, centre, VOXEL, np.eye(3))
    phantoms.paste(potential, phantoms.gold_bead(50.0, VOXEL), np.array(GOLD))
    bottom, top = np.zeros((64, 64)), np.full((64, 64), 48 * VOXEL)
    potential += 0.3 * ice_texture(potential.shape, VOXEL, bottom, top, rng)  # as the synthetic presets
    return simulate_tomogram(potential * 2.5, VOXEL, Microscope(), rng, ice_thickness=top - bottom)


def test_the_mask_covers_the_gold_bead_and_no_protein(tomogram):
    mask = dense_outlier_mask(tomogram[None], threshold=7.0, margin=3)
    assert mask.shape == (1, *tomogram.shape) and mask[(0, *GOLD)]
    for name, centre in PARTICLES.items():
        z, y, x = centre
        assert not mask[0, z - 3 : z + 4, y - 3 : y + 4, x - 3 : x + 4].any(), name
    assert mask.mean() < 0.01
    assert not dense_outlier_mask(np.ones((1, 8, 8, 8), np.float32)).any()  # constant image: no spread, no outliers


def _response(tomogram):
    """A network's class map: particles, and a bead whose response reaches beyond the 60 Å margin."""
    particles = render_heatmap(list(PARTICLES.values()), [0] * len(PARTICLES), [2.0], tomogram.shape, 1)
    bead = render_heatmap([GOLD], [0], [5.0], tomogram.shape, 1)
    return torch.logit(torch.maximum(particles, bead).clamp(1e-4, 1 - 1e-4))


def test_no_pick_lands_on_the_bead(tomogram):
    image = torch.from_numpy(tomogram)[None]
    picks = HeatmapToPicks(["particle"], [60.0], thresholds=0.5)(_response(tomogram), "t", VOXEL)
    assert len(picks) == 4
    kept = DropDenseOutlierPicks(threshold=7.0, margin_angstrom=60.0)(picks, image, VOXEL)
    found = np.round(kept[["z", "y", "x"]].to_numpy() / VOXEL).astype(int)
    assert sorted(map(tuple, found)) == sorted(PARTICLES.values())
    assert len(DropDenseOutlierPicks(threshold=None)(picks, image, VOXEL)) == 4
    d = DropDenseOutlierPicksd(threshold=7.0)({"pred_picks": picks, "image": image, "voxel_size": VOXEL})
    assert d["pred_picks"].equals(kept)


def test_the_teacher_s_bead_becomes_trusted_background(tomogram):
    image = torch.from_numpy(tomogram)[None, None]
    response = _response(tomogram)[None]

    def teacher(x):  # fires on the particles and on the bead alike, in every view
        return response.expand(x.shape[0], -1, -1, -1, -1)

    plain = MultiViewPseudoLabeler([60.0], VOXEL, thresholds=0.5, views=[0], negative_threshold=0.1)
    aware = MultiViewPseudoLabeler([60.0], VOXEL, thresholds=0.5, views=[0], negative_threshold=0.1, dense_outlier_threshold=7.0)
    z, y, x = GOLD
    for labeler, bead_is_particle in ((plain, True), (aware, False)):
        pseudo, trusted = labeler(teacher, image)
        assert pseudo[(0, 0, *PARTICLES["ribosome"])] == pytest.approx(1.0)
        assert bool(pseudo[0, 0, z - 8 : z + 9, y - 8 : y + 9, x - 8 : x + 9].max() > 0.5) == bead_is_particle  # no ring either
        assert trusted[(0, 0, *GOLD)] == 1  # a pseudo-particle, or trusted background


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="threshold"):
        DropDenseOutlierPicks(threshold=0.0)
    with pytest.raises(ValueError, match="margin"):
        DropDenseOutlierPicks(margin_angstrom=-1.0)
    with pytest.raises(ValueError, match="one-channel"):
        dense_outlier_mask(np.zeros((2, 8, 8, 8), np.float32))


def test_a_denoised_tomogram_keeps_its_proteins(tomogram):
    denoised = ndimage.gaussian_filter(tomogram, 2.0)  # protein now stands far above the remaining noise
    mask = dense_outlier_mask(denoised[None], threshold=7.0, margin=3)
    assert mask[(0, *GOLD)]
    for name, (z, y, x) in PARTICLES.items():
        assert not mask[0, z - 3 : z + 4, y - 3 : y + 4, x - 3 : x + 4].any(), name
