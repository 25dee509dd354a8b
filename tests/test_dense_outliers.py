"""Gold beads kept out of picks and pseudo-labels: the mask on a simulated tomogram, the heatmap suppression."""

import numpy as np
import pytest
from scipy import ndimage
import torch

from cryoet_monai.data import phantoms
from cryoet_monai.data.microscope import Microscope, simulate_tomogram
from cryoet_monai.data.synthetic import ice_texture
from cryoet_monai.engines import MultiViewPseudoLabeler
from cryoet_monai.inference.postprocess import HeatmapToPicks
from cryoet_monai.transforms.dense_outliers import SuppressDenseOutliers, SuppressDenseOutliersd, dense_outlier_mask
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


def test_no_pick_lands_on_the_bead(tomogram):
    centres = [*PARTICLES.values(), GOLD]
    heatmap = render_heatmap(centres, [0] * len(centres), [2.0], tomogram.shape, 1)
    logits = torch.logit(heatmap.clamp(1e-4, 1 - 1e-4))
    to_picks = HeatmapToPicks(["particle"], [60.0], thresholds=0.5)
    assert len(to_picks(logits, "t", VOXEL)) == 4
    suppressed = SuppressDenseOutliers(threshold=7.0, margin_angstrom=60.0)(logits, torch.from_numpy(tomogram)[None], VOXEL)
    picks = to_picks(suppressed, "t", VOXEL)
    found = np.round(picks[["z", "y", "x"]].to_numpy() / VOXEL).astype(int)
    assert sorted(map(tuple, found)) == sorted(PARTICLES.values())
    assert float(suppressed.min()) == pytest.approx(float(logits.min()))  # lowered to the map's minimum, nothing lower
    unchanged = SuppressDenseOutliers(threshold=None)(logits, torch.from_numpy(tomogram)[None], VOXEL)
    assert unchanged is logits
    d = SuppressDenseOutliersd(keys="pred", threshold=7.0)({"pred": logits, "image": torch.from_numpy(tomogram)[None], "voxel_size": VOXEL})
    assert torch.equal(d["pred"], suppressed)


def test_the_teacher_s_bead_becomes_trusted_background(tomogram):
    image = torch.from_numpy(tomogram)[None, None]
    centres = [PARTICLES["ribosome"], GOLD]
    heatmap = render_heatmap(centres, [0, 0], [2.0], tomogram.shape, 1)[None]

    def teacher(x):  # fires on the ribosome and on the bead alike, in every view
        return torch.logit(heatmap.clamp(1e-4, 1 - 1e-4)).expand(x.shape[0], -1, -1, -1, -1)

    plain = MultiViewPseudoLabeler([150.0], VOXEL, thresholds=0.5, views=[0], negative_threshold=0.1)
    aware = MultiViewPseudoLabeler([150.0], VOXEL, thresholds=0.5, views=[0], negative_threshold=0.1, dense_outlier_threshold=7.0)
    for labeler, bead_is_particle in ((plain, True), (aware, False)):
        pseudo, trusted = labeler(teacher, image)
        assert pseudo[(0, 0, *PARTICLES["ribosome"])] == pytest.approx(1.0)
        assert bool(pseudo[(0, 0, *GOLD)] > 0.9) == bead_is_particle
        assert trusted[(0, 0, *GOLD)] == 1  # a pseudo-particle, or trusted background


def test_bad_settings_and_shapes_are_named():
    with pytest.raises(ValueError, match="threshold"):
        SuppressDenseOutliers(threshold=0.0)
    with pytest.raises(ValueError, match="margin"):
        SuppressDenseOutliers(margin_angstrom=-1.0)
    with pytest.raises(ValueError, match="one-channel"):
        dense_outlier_mask(np.zeros((2, 8, 8, 8), np.float32))
    with pytest.raises(ValueError, match="spatial shape"):
        SuppressDenseOutliers()(torch.zeros(1, 8, 8, 8), torch.zeros(1, 8, 8, 9), VOXEL)


def test_a_denoised_tomogram_keeps_its_proteins(tomogram):
    denoised = ndimage.gaussian_filter(tomogram, 2.0)  # protein now stands far above the remaining noise
    mask = dense_outlier_mask(denoised[None], threshold=7.0, margin=3)
    assert mask[(0, *GOLD)]
    for name, (z, y, x) in PARTICLES.items():
        assert not mask[0, z - 3 : z + 4, y - 3 : y + 4, x - 3 : x + 4].any(), name
