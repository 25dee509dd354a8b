"""The demo: its data is the shipped demo manifest, and the shipped SemiETPicker model finds its large particles."""

import json
from pathlib import Path

import pandas as pd

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks
from cryoet_monai.data.synthetic import synthesize
from cryoet_monai.demo import run_demo, shipped_model
from cryoet_monai.metrics import score_picks

SHIPPED = Path(__file__).resolve().parents[1] / "data_manifests" / "demo"


def test_demo_data_matches_the_shipped_manifest(tmp_path):
    manifest = synthesize(tmp_path, preset="demo", seed=1, progress=False)
    assert json.loads(manifest.read_text()) == json.loads((SHIPPED / "manifest.json").read_text())
    for picks in sorted((SHIPPED / "picks").glob("*.csv")):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "picks" / picks.name), pd.read_csv(picks))


def assert_most_large_particles_found(result, out, margin):
    """Recall ≥ 0.7 for every class of radius ≥ 100 Å, and a CZII score ``margin`` above the blob floor's."""
    manifest = load_manifest(out / "data" / "manifest.json")
    large = [c.name for c in manifest.classes if c.radius >= 100]
    assert len(large) == 3  # ribosome, thyroglobulin, virus-like particle
    for name in large:
        assert result["classes"][name]["recall"] >= 0.7, (name, result["classes"][name])
    floor = score_picks(read_picks(out / "blob_floor" / "picks.csv", ndim=3), manifest, "test")
    assert result["score"] > floor["score"] + margin, (result["score"], floor["score"])


def test_demo_with_the_shipped_model_finds_most_large_particles(tmp_path):
    assert shipped_model() is not None, "bundles/semietpicker/models/model.pt is not shipped"
    result = run_demo(tmp_path, method="semietpicker")
    assert_most_large_particles_found(result, tmp_path, margin=0.3)
    assert (tmp_path / "overlay.png").stat().st_size > 10000


def test_demo_on_template_particles_beats_the_blob_floor(tmp_path, shared_data):
    """The shipped model was trained half on built-in particles; on real-template densities it finds the large ones too."""
    result = run_demo(tmp_path, method="semietpicker", templates=shared_data / "templates_10A")
    assert_most_large_particles_found(result, tmp_path, margin=0.2)
