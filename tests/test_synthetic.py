"""Synthetic tomograms: files and manifest, determinism, visible particles, the missing wedge, real templates/layouts."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.microscope import Microscope, project, reconstruct
from cryoet_monai.data.picks import read_picks
from cryoet_monai.data.readers import read_image
from cryoet_monai.cli import main
from cryoet_monai.data.phantoms import template_radius
from cryoet_monai.data.species import CZII_SPECIES, SHREC_SPECIES
from cryoet_monai.data.synthetic import make_tomogram, resolve_settings, synthesize

EASY = ("ribosome", "apo-ferritin", "virus-like-particle")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("tiny"), "tiny", seed=0, progress=False)


def ball_means(tomogram, voxel_size, centres_xyz, radius):
    """Mean of the tomogram inside a ball (Å) around each centre (Å, x-y-z)."""
    means = []
    for centre in np.asarray(centres_xyz, dtype=float).reshape(-1, 3)[:, ::-1] / voxel_size:
        lo = np.maximum(np.floor(centre - radius / voxel_size), 0).astype(int)
        hi = np.minimum(np.ceil(centre + radius / voxel_size) + 1, tomogram.shape).astype(int)
        grid = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij"), -1)
        inside = np.linalg.norm(grid - centre, axis=-1) <= radius / voxel_size
        means.append(tomogram[tuple(slice(a, b) for a, b in zip(lo, hi))][inside].mean())
    return np.array(means)


def test_files_and_manifest(tiny):
    manifest = load_manifest(tiny)  # checks files, classes and that every pick lies inside its image
    assert [(c.name, c.radius, c.weight) for c in manifest.classes] == [
        (s.name, s.radius, s.weight) for s in CZII_SPECIES
    ]
    assert {s: len(manifest.items(s)) for s in ("training", "unlabeled", "validation", "test")} == dict.fromkeys(
        ("training", "unlabeled", "validation", "test"), 1
    )
    assert manifest.items("unlabeled")[0].picks is None
    item = manifest.items("training")[0]
    tomogram, voxel_size = read_image(item.image)
    assert tomogram.shape == (32, 64, 64) and tomogram.dtype == np.float32
    assert voxel_size == pytest.approx(25.0)
    assert abs(tomogram.mean()) < 1e-3 and tomogram.std() == pytest.approx(1.0, abs=1e-3)
    picks = read_picks(item.picks)
    assert set(picks["particle_type"]) == {s.name for s in CZII_SPECIES}  # every class at least once
    assert (picks["score"] == 1).all() and (picks["experiment"] == item.id).all()


def test_rerun_skips_finished_tomograms(tmp_path, capsys):
    small = {"shape": (32, 32, 16), "n_tomograms": 1}
    image = synthesize(tmp_path, "tiny", seed=0, **small).parent / "tomograms" / "tomo_000.mrc"
    before = image.stat().st_mtime_ns
    synthesize(tmp_path, "tiny", seed=0, **small)
    assert image.stat().st_mtime_ns == before
    assert "already done" in capsys.readouterr().out
    synthesize(tmp_path, "tiny", seed=0, progress=False, dose=50.0, **small)  # other settings: regenerated
    assert image.stat().st_mtime_ns != before


def test_same_seed_same_tomogram_other_seed_differs():
    settings = resolve_settings("tiny", {"shape": (48, 48, 24)})
    first, picks = make_tomogram("a", np.random.default_rng([3, 0]), settings)
    again, picks_again = make_tomogram("a", np.random.default_rng([3, 0]), settings)
    other, _ = make_tomogram("a", np.random.default_rng([4, 0]), settings)
    np.testing.assert_array_equal(first, again)
    assert picks.equals(picks_again)
    assert np.abs(first - other).mean() > 0.5


def test_easy_particles_stand_out_and_mass_orders_visibility(tiny):
    manifest = load_manifest(tiny)
    rng = np.random.default_rng(0)
    scores = {}
    for split in ("training", "validation", "test"):
        item = manifest.items(split)[0]
        tomogram, voxel_size = read_image(item.image)
        picks = read_picks(item.picks)
        xyz = picks[["x", "y", "z"]].to_numpy()
        extent = np.asarray(tomogram.shape[::-1]) * voxel_size
        spots = [c for c in rng.uniform(0, extent, (400, 3)) if np.all(np.linalg.norm(xyz - c, axis=1) > 300)][:30]
        for species in CZII_SPECIES:
            background = ball_means(tomogram, voxel_size, spots, species.radius)
            inside = ball_means(tomogram, voxel_size, xyz[picks["particle_type"] == species.name], species.radius)
            scores.setdefault(species.name, []).extend((background.mean() - inside) / background.std())  # protein dark
    for name in EASY:
        assert np.mean(scores[name]) > 3.0, (name, scores[name])
    assert np.mean(scores["beta-amylase"]) < 1.5 < np.mean(scores["ribosome"]) - 1.5


def test_missing_wedge_in_fourier_space(tiny):
    tomogram, _ = read_image(load_manifest(tiny).items("validation")[0].image)
    power = np.abs(np.fft.fftn(tomogram)) ** 2
    kz, _, kx = np.meshgrid(*(np.fft.fftfreq(n) for n in tomogram.shape), indexing="ij")
    angle_from_kz = np.degrees(np.arctan2(np.abs(kx), np.abs(kz)))  # the wedge: within 30° of k_z for ±60° tilts
    k = np.hypot(kx, kz)
    band = (k > 0.05) & (k < 0.3)
    wedge = power[band & (angle_from_kz < 20)].mean()
    sampled = power[band & (angle_from_kz > 40)].mean()
    assert wedge < 0.05 * sampled


def test_reconstruction_puts_a_point_back_elongated_along_z():
    z, x = np.meshgrid(np.arange(24), np.arange(32), indexing="ij")
    blob = np.exp(-((z - 15) ** 2 + (x - 10) ** 2) / (2 * 2.0**2))  # off-centre in X and Z, a rod along the tilt axis
    volume = torch.from_numpy(np.repeat(blob[:, None], 4, axis=1).astype(np.float32))
    angles = Microscope().tilt_angles()
    tomogram = reconstruct(project(volume, angles), angles, 24)[:, 2]
    assert np.unravel_index(np.argmax(tomogram), tomogram.shape) == (15, 10)
    half = tomogram.max() / 2
    assert (tomogram[:, 10] > half).sum() > (tomogram[15, :] > half).sum()  # the missing wedge stretches Z


def test_settings_are_checked():
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_settings("huge", {})
    with pytest.raises(ValueError, match="unknown setting"):
        resolve_settings("tiny", {"dosage": 3})
    assert resolve_settings("czii-bin2", {"n_tomograms": 7})["splits"] == {
        "training": 3,
        "unlabeled": 1,
        "validation": 1,
        "test": 2,
    }
    assert Microscope(tilt_min=-50, tilt_max=50, tilt_step=2).tilt_angles().tolist() == list(range(-50, 51, 2))
    with pytest.raises(ValueError, match="tilt range"):
        Microscope(tilt_min=-95).tilt_angles()


def test_real_templates_and_layout(shared_data, tmp_path):
    """CZII runs replayed at 80 Å/voxel (same physical extent as the challenge) with the real density templates."""
    path = synthesize(
        tmp_path,
        "czii-bin2",
        seed=0,
        templates=shared_data / "templates_10A",
        layout=shared_data / "czii_picks",
        progress=False,
        shape=(79, 79, 23),
        voxel_size=80.0,
        n_tomograms=2,
        vesicles=(0, 0),
        gold=(0, 0),
    )
    manifest = load_manifest(path)
    assert [it.id for s in ("training", "unlabeled", "validation", "test") for it in manifest.items(s)] == [
        "TS_5_4",
        "TS_86_3",
    ]
    picks = read_picks(manifest.items("training")[0].picks)
    counts = picks["particle_type"].value_counts().to_dict()
    assert counts == {
        "apo-ferritin": 46,
        "ribosome": 31,
        "thyroglobulin": 30,
        "beta-galactosidase": 12,
        "virus-like-particle": 11,
        "beta-amylase": 10,
    }
    first = json.loads((shared_data / "czii_picks" / "TS_5_4" / "ribosome.json").read_text())["points"][0]["location"]
    ribosomes = picks[picks["particle_type"] == "ribosome"][["x", "y", "z"]].to_numpy()
    scale = np.array([79, 79, 23]) * 80.0 / (np.array([630, 630, 184]) * 10.012)
    assert np.min(np.linalg.norm(ribosomes - np.array([first["x"], first["y"], first["z"]]) * scale, axis=1)) < 1e-2
    tomogram, _ = read_image(manifest.items("training")[0].image)
    assert ball_means(tomogram, 80.0, ribosomes, 150.0).mean() < -1.0  # ribosomes dark in std units


def test_shrec_preset(shared_data, tmp_path):
    """Twelve SHREC classes (weight 1), every one placed inside the volume, big complexes dark."""
    shape = (96, 96, 40)
    path = synthesize(
        tmp_path, "shrec", seed=0, templates=shared_data / "templates_10A", progress=False, shape=shape, n_tomograms=1
    )
    manifest = load_manifest(path)  # also checks that every pick lies inside its image
    assert [(c.name, c.radius, c.weight) for c in manifest.classes] == [(s.name, s.radius, 1.0) for s in SHREC_SPECIES]
    assert len(manifest.classes) == 12 and manifest.voxel_size == pytest.approx(20.0)
    picks = read_picks(manifest.items("training")[0].picks)
    assert set(picks["particle_type"]) == {s.name for s in SHREC_SPECIES}
    xyz = picks[["x", "y", "z"]].to_numpy()
    assert (xyz >= 0).all() and (xyz < np.array(shape) * 20.0).all()
    tomogram, _ = read_image(manifest.items("training")[0].image)
    big = picks[picks["particle_type"].isin(["4cr2", "5mrc"])][["x", "y", "z"]].to_numpy()
    assert ball_means(tomogram, 20.0, big, 80.0).mean() < -0.5


def test_shrec_radii_follow_the_templates(shared_data):
    for species in SHREC_SPECIES:
        assert 5 * round(template_radius(shared_data / "templates_10A" / f"{species.pdb}.mrc") / 5) == species.radius


def test_shrec_needs_templates(tmp_path, capsys):
    with pytest.raises(ValueError, match="needs --templates"):
        synthesize(tmp_path, "shrec", shape=(32, 32, 16), n_tomograms=1)
    assert main(["synth", "--out", str(tmp_path / "cli"), "--preset", "shrec"]) == 2
    assert "needs --templates" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="1bxn"):
        synthesize(tmp_path, "shrec", templates=tmp_path, shape=(32, 32, 16), n_tomograms=1)


def test_acquisition_spread_draws_its_own_microscope_per_tomogram(shared_data, tmp_path):
    """Each tomogram its own voxel size, tilt range and defocus; decoys rendered but never in the picks; layouts of
    the evaluation runs never replayed; a second call keeps the finished tomograms."""
    from cryoet_monai.data.acquisition_spread import SPREAD, TRAINING_LAYOUT_RUNS, synthesize_spread

    small = {"extent_xy": (1200.0, 1500.0), "ice_thickness": (500.0, 700.0), "decoys": (5, 5)}
    path = synthesize_spread(tmp_path, 3, 1, seed=1, templates=shared_data / "templates_10A",
                             layout=shared_data / "czii_picks", spread=small)
    manifest = load_manifest(path)
    assert [len(manifest.items(s)) for s in ("training", "validation")] == [3, 1] and manifest.contrast == "dark"
    plans = json.loads((tmp_path / "spread.json").read_text())["items"]
    voxel_sizes = [it.voxel_size for s in ("training", "validation") for it in manifest.items(s)]
    assert voxel_sizes == [p["overrides"]["voxel_size"] for p in plans] and len(set(voxel_sizes)) == 4
    for plan in plans:
        low, high = SPREAD["voxel_size"]
        assert low <= plan["overrides"]["voxel_size"] <= high
        assert plan["layout_run"] in (None, *TRAINING_LAYOUT_RUNS)
        assert plan["overrides"]["decoys"] == ([0, 5] if plan["templates"] else [0, 0])
    picks = pd.concat([manifest.read_item_picks(it) for it in manifest.items("training")])
    assert set(picks["particle_type"]) <= {s.name for s in CZII_SPECIES}  # decoys are SHREC species, never labelled
    first = manifest.items("training")[0].image
    before = first.stat().st_mtime_ns
    synthesize_spread(tmp_path, 3, 1, seed=1, templates=shared_data / "templates_10A", layout=shared_data / "czii_picks",
                      spread=small)
    assert first.stat().st_mtime_ns == before


def test_decoys_are_rendered_but_not_picked(shared_data):
    settings = resolve_settings("tiny", {"shape": (64, 64, 32), "decoys": (6, 6), "vesicles": (0, 0), "gold": (0, 0)})
    templates = shared_data / "templates_10A"
    with_decoys, picks = make_tomogram("a", np.random.default_rng(0), settings, templates)
    without, same_picks = make_tomogram("a", np.random.default_rng(0), {**settings, "decoys": (0, 0)}, templates)
    assert picks.equals(same_picks)  # decoys are drawn after the labelled particles
    assert not np.allclose(with_decoys, without)
    with pytest.raises(ValueError, match="decoys .* need --templates"):
        make_tomogram("a", np.random.default_rng(0), settings)
