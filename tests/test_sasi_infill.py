"""Volume infill: pasted particles carry their labels, reach the density asked for and never overlap."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, RandGaussianNoise, RandGaussianSmooth

from cryoet_monai.data.picks import make_picks, write_picks
from cryoet_monai.data.readers import write_mrc
from cryoet_monai.transforms.infill import BankedParticle, RandAugMixd, RandVolumeInfilld, build_particle_bank
from cryoet_monai.transforms.spheres import render_spheres


def _bank(radii=(3.0, 4.0)):
    rng = np.random.default_rng(0)
    bank = []
    for label, radius in enumerate(radii):
        size = 2 * int(np.ceil(1.5 * radius)) + 1
        bank.append(BankedParticle(torch.as_tensor(rng.normal(size=(1, size, size, size)), dtype=torch.float32), label, radius))
    return bank


def _crop():
    label = render_spheres([[16, 16, 16]], [0], [4.0], (32, 48, 48))
    return {"image": torch.zeros(1, 32, 48, 48), "label": label, "loss_mask": torch.ones(1, 32, 48, 48)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pasted_labels_match_pasted_particles_and_never_overlap(seed):
    bank, crop = _bank(), _crop()
    infill = RandVolumeInfilld(bank=bank, target_fraction=0.2, max_particles=6, max_tries=200)
    infill.set_random_state(seed)
    out = infill(crop)
    assert len(infill.pasted) > 0
    # the existing particle is untouched
    assert torch.equal(out["label"][crop["label"] > 0], crop["label"][crop["label"] > 0])
    # the new foreground is exactly the union of the pasted balls, each with its class
    expected = crop["label"].clone()
    touched = torch.zeros_like(expected, dtype=torch.bool)
    for label, centre in infill.pasted:
        half = bank[label].image.shape[-1] // 2
        touched[(0, *(slice(c - half, c + half + 1) for c in centre))] = True
        ball = render_spheres([centre], [0], [bank[label].radius], expected.shape[1:])
        assert not torch.any((ball > 0) & (expected > 0)), "a pasted ball overlaps a labelled particle"
        expected[ball > 0] = label + 1
        assert out["label"][(0, *centre)] == label + 1
    assert torch.equal(out["label"], expected)
    # image changed only around pasted particles, and the pasted balls are annotated
    assert torch.all(out["image"][~touched] == 0) and torch.any(out["image"][touched] != 0)
    assert torch.all(out["loss_mask"][expected > 0] == 1)


def test_pasted_density_reaches_the_particle_radius_beyond_a_smaller_label_ball():
    # a capsid-like particle: label ball of radius 3 (radius_scale 0.6), density out to 5 voxels
    size = 2 * int(np.ceil(1.5 * 5.0)) + 1
    bank = [BankedParticle(torch.ones(1, size, size, size), 0, 3.0, extent=5.0)]
    crop = _crop()
    infill = RandVolumeInfilld(bank=bank, target_fraction=1.0, max_particles=3, max_tries=300, random_view=False)
    infill.set_random_state(0)
    out = infill(crop)
    assert infill.pasted
    existing = torch.tensor([16.0, 16.0, 16.0])
    for _, centre in infill.pasted:
        z, y, x = centre
        assert out["image"][0, z, y, x + 4] == pytest.approx(1.0)  # inside the density: the particle, unblended
        assert out["label"][0, z, y, x + 4] == 0 and out["label"][0, z, y, x + 2] == 1  # only the ball is labelled
        # no other particle within (1 + gap) · extent + 1 of the centre, measured to the existing ball's surface
        assert float(torch.linalg.norm(torch.tensor(centre, dtype=torch.float32) - existing)) - 4.0 > 1.2 * 5.0


def test_density_target_and_particle_cap():
    bank = _bank()
    dense = RandVolumeInfilld(bank=bank, target_fraction=0.02, max_particles=100, max_tries=500)
    dense.set_random_state(0)
    out = dense(_crop())
    fraction = float((out["label"] > 0).float().mean())
    assert fraction >= 0.02
    before_last = fraction - (4 / 3 * np.pi * 4.0**3 * 1.2) / out["label"].numel()
    assert before_last < 0.02  # it stopped as soon as the target was met
    capped = RandVolumeInfilld(bank=bank, target_fraction=1.0, max_particles=3, max_tries=500)
    capped.set_random_state(0)
    capped(_crop())
    assert len(capped.pasted) == 3


def test_annotated_only_mode_and_blend():
    bank = _bank((3.0,))
    crop = _crop()
    crop["loss_mask"][..., 24:] = 0
    infill = RandVolumeInfilld(bank=bank, target_fraction=1.0, max_particles=4, max_tries=300, allow_unannotated=False, random_view=False)
    infill.set_random_state(0)
    out = infill(crop)
    assert infill.pasted and all(centre[2] + 3 < 24 for _, centre in infill.pasted)
    label, centre = infill.pasted[0]
    patch = bank[label].image[0]
    half = patch.shape[-1] // 2
    z, y, x = centre
    assert torch.allclose(out["image"][0, z, y, x], patch[half, half, half])  # inside: the particle
    assert out["image"][0, z, y, x - half] == pytest.approx(0.0)  # the cube's edge: the crop (alpha 0)


def test_skipped_with_probability_zero_and_keeps_meta():
    crop = _crop()
    crop["image"] = MetaTensor(crop["image"], meta={"voxel_size": 10.0})
    out = RandVolumeInfilld(bank=_bank(), prob=0.0)(crop)
    assert torch.equal(out["label"], crop["label"])
    out = RandVolumeInfilld(bank=_bank(), prob=1.0)(crop)
    assert isinstance(out["image"], MetaTensor) and out["image"].meta["voxel_size"] == 10.0


def test_bank_built_from_annotated_particles_only(tmp_path):
    volume = np.zeros((30, 40, 40), np.float32)
    write_mrc(tmp_path / "t.mrc", volume, 10.0)
    # (x, y, z) Å: two inside the box, one outside it, one too close to the edge
    positions = np.array([[150, 150, 150], [250, 250, 150], [350, 150, 150], [20, 200, 150]], float)
    write_picks(make_picks("t", ["a", "b", "a", "a"], positions), tmp_path / "t.csv")
    item = {"id": "t", "image": str(tmp_path / "t.mrc"), "picks": str(tmp_path / "t.csv"), "annotated": [[0, 0, 0, 300, 390, 290]], "voxel_size": 10.0}
    load = Compose([LoadImaged(keys="image", reader="cryoet_monai.data.readers.MRCReader", ensure_channel_first=True)])
    bank = build_particle_bank([item], load, ["a", "b"], [30.0, 40.0])
    assert sorted((p.label, p.radius) for p in bank) == [(0, 3.0), (1, 4.0)]
    assert bank[0].image.shape == (1, 11, 11, 11) or bank[1].image.shape == (1, 11, 11, 11)
    with pytest.raises(ValueError, match="no annotated particle"):
        build_particle_bank([{**item, "annotated": [[0, 0, 0, 10, 10, 10]]}], load, ["a", "b"], [30.0, 40.0])


def test_augmix_mixes_image_only_and_is_seeded():
    crop = _crop()
    crop["image"] = torch.randn(1, 32, 48, 48, generator=torch.Generator().manual_seed(0))
    augs = [RandGaussianNoise(prob=1.0, std=0.5), RandGaussianSmooth(prob=1.0)]
    mix = RandAugMixd(keys="image", augmentations=augs, prob=1.0).set_random_state(3)
    out = mix(dict(crop))
    again = RandAugMixd(keys="image", augmentations=augs, prob=1.0).set_random_state(3)(dict(crop))
    assert not torch.allclose(out["image"], crop["image"])
    assert torch.allclose(out["image"], again["image"])
    assert torch.equal(out["label"], crop["label"])
