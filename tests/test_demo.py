"""The demo: its data is the shipped demo manifest, and the shipped SemiETPicker model finds its easy particles."""

import json
from pathlib import Path

import pandas as pd

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.synthetic import synthesize
from cryoet_monai.demo import run_demo, shipped_model
from cryoet_monai.inference.blobs import pick_with_blobs
from cryoet_monai.metrics import score_picks

SHIPPED = Path(__file__).resolve().parents[1] / "data_manifests" / "demo"


def test_demo_data_matches_the_shipped_manifest(tmp_path):
    manifest = synthesize(tmp_path, preset="tiny", seed=1, progress=False)
    assert json.loads(manifest.read_text()) == json.loads((SHIPPED / "manifest.json").read_text())
    for picks in sorted((SHIPPED / "picks").glob("*.csv")):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "picks" / picks.name), pd.read_csv(picks))


def test_demo_with_the_shipped_model_finds_easy_particles(tmp_path):
    assert shipped_model() is not None, "bundles/semietpicker/models/model.pt is not shipped"
    result = run_demo(tmp_path, method="semietpicker")
    for name in ("ribosome", "virus-like-particle"):
        assert result["classes"][name]["recall"] == 1.0, (name, result["classes"][name])
    assert result["score"] > 0.2
    assert (tmp_path / "overlay.png").stat().st_size > 10000


def test_demo_on_template_particles_beats_the_blob_floor(tmp_path, shared_data):
    """The shipped model was trained on built-in particles; on real-template densities it still finds the large ones."""
    result = run_demo(tmp_path, method="semietpicker", templates=shared_data / "templates_10A")
    for name in ("ribosome", "virus-like-particle"):
        assert result["classes"][name]["recall"] == 1.0, (name, result["classes"][name])
    manifest = tmp_path / "data" / "manifest.json"
    floor = score_picks(pick_with_blobs(manifest, "test"), load_manifest(manifest), "test")
    assert result["mean_f1"] > floor["mean_f1"] + 0.05, (result["mean_f1"], floor["mean_f1"])
