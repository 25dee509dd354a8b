"""Contrast polarity (DESIGN.md §2): synthetic tomograms show protein dark, manifests declare their polarity, the
loader inverts an image to the network's, models record theirs, and `manifest check` measures it from the picks."""

import json
import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cryoet_monai.cli import main
from cryoet_monai.data.contrast import measure_contrast, measure_item_contrast
from cryoet_monai.data.manifest import ManifestError, load_manifest
from cryoet_monai.data.readers import read_image
from cryoet_monai.data.synthetic import synthesize
from cryoet_monai.inference.blobs import pick_with_blobs
from cryoet_monai.transforms.contrast import MatchContrast, MatchContrastd

CROWDED = {"shape": (96, 96, 40), "crowding": 2.0, "vesicles": (0, 0), "gold": (0, 0), "n_tomograms": 1}


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """One small tomogram packed with the six CZII species, written dark (the default) and bright (same seed)."""
    root = tmp_path_factory.mktemp("contrast")
    dark = synthesize(root / "dark", preset="tiny", seed=3, progress=False, **CROWDED)
    bright = synthesize(root / "bright", preset="tiny", seed=3, progress=False, contrast="bright", **CROWDED)
    return dark, bright


def _class_measurement(manifest_path, name):
    manifest = load_manifest(manifest_path)
    item = manifest.items("training")[0]
    picks = manifest.read_item_picks(item)
    picks = picks[picks.particle_type == name]
    volume, voxel_size = read_image(item.image)
    radius = manifest.particle_class(name).radius / voxel_size
    return measure_contrast(volume, picks[["z", "y", "x"]].to_numpy() / voxel_size, radius)


@pytest.mark.parametrize("name", ["ribosome", "beta-galactosidase"])
def test_synthetic_protein_is_darker_than_the_ice_around_it(crowded, name):
    dark, bright = crowded
    measured = _class_measurement(dark, name)
    assert measured.picks >= 2 and measured.difference < -0.2, measured
    assert _class_measurement(bright, name).difference == pytest.approx(-measured.difference)


def test_bright_synthesis_is_the_exact_inverse_and_says_so(crowded):
    dark, bright = crowded
    assert json.loads(dark.read_text())["contrast"] == "dark" and json.loads(bright.read_text())["contrast"] == "bright"
    (d, _), (b, _) = (read_image(load_manifest(m).items("training")[0].image) for m in crowded)
    np.testing.assert_array_equal(b, -d)


def test_match_contrast_inverts_exactly_only_the_other_polarity():
    image = torch.randn(1, 4, 5, 6)
    assert MatchContrast("dark")(image, "dark") is image
    assert torch.equal(MatchContrast("dark")(image, "bright"), -image)
    assert torch.equal(MatchContrast("bright")(image, "dark"), -image)
    with pytest.raises(ValueError, match="network_contrast: contrast must be one of \\['dark', 'bright'\\]"):
        MatchContrast("inverted")
    with pytest.raises(ValueError, match="image: contrast must be one of"):
        MatchContrast("dark")(image, "grey")


def test_dictionary_twin_takes_the_polarity_from_the_item_and_records_it():
    image = MetaTensor(torch.randn(1, 4, 5, 6), meta={"voxel_size": 10.0, "filename_or_obj": "a.mrc"})
    out = MatchContrastd("image", network_contrast="dark")({"id": "a", "image": image, "contrast": "bright"})
    assert isinstance(out["image"], MetaTensor) and torch.equal(out["image"].as_tensor(), -image.as_tensor())
    assert out["image"].meta["contrast"] == "dark" and out["image"].meta["original_contrast"] == "bright"
    assert out["image"].meta["voxel_size"] == 10.0 and out["contrast"] == "bright"
    kept = MatchContrastd("image")({"id": "b", "image": image})  # no declaration: the contract's default, dark
    assert torch.equal(kept["image"].as_tensor(), image.as_tensor()) and kept["image"].meta["original_contrast"] == "dark"
    with pytest.raises(ValueError, match="item 'c': contrast must be one of"):
        MatchContrastd("image")({"id": "c", "image": image, "contrast": "negative"})


def test_manifest_contrast_is_read_defaulted_overridden_and_validated(make_manifest, tmp_path):
    path = make_manifest({"test": [("a", None, None), ("b", None, None)]})
    manifest = load_manifest(path)
    assert manifest.contrast == "dark" and [it.contrast for it in manifest.items("test")] == ["dark", "dark"]
    raw = json.loads(path.read_text())
    raw["contrast"] = "bright"
    raw["test"][1]["contrast"] = "dark"
    path.write_text(json.dumps(raw))
    manifest = load_manifest(path)
    assert [it.as_dict()["contrast"] for it in manifest.items("test")] == ["bright", "dark"]
    saved = load_manifest(manifest.save(tmp_path / "copy" / "manifest.json"))
    assert saved.contrast == "bright" and [it.contrast for it in saved.items("test")] == ["bright", "dark"]
    raw["test"][1]["contrast"] = "white"
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"manifest.json: test\[1\] \('b'\): 'contrast' must be one of \['dark', 'bright'\]"):
        load_manifest(path)


def test_manifest_check_prints_the_contrast_and_warns_when_the_picks_say_otherwise(crowded, tmp_path, capsys):
    _, bright = crowded
    assert main(["manifest", "check", str(bright)]) == 0
    captured = capsys.readouterr()
    assert "contrast bright" in captured.out and "warning" not in captured.err
    raw = json.loads(bright.read_text())
    raw["contrast"] = "dark"  # the same inverted tomogram declared dark
    mislabelled = bright.parent / "mislabelled.json"
    mislabelled.write_text(json.dumps(raw))
    assert main(["manifest", "check", str(mislabelled)]) == 0
    captured = capsys.readouterr()
    assert "contrast dark" in captured.out
    assert "declared \"dark\" but its" in captured.err and "are bright" in captured.err and 'set "contrast": "bright"' in captured.err
    manifest = load_manifest(mislabelled)
    assert measure_item_contrast(manifest, manifest.items("training")[0]).contrast == "bright"


def test_blob_floor_picks_each_image_at_its_declared_contrast(crowded):
    dark, bright = crowded
    picked = [pick_with_blobs(m, "training").sort_values(["particle_type", "x", "y", "z"]) for m in (dark, bright)]
    assert len(picked[0]) > 0
    np.testing.assert_allclose(picked[0][["x", "y", "z"]].to_numpy(), picked[1][["x", "y", "z"]].to_numpy())


def test_models_record_their_contrast_and_refuse_the_other(tmp_path):
    from cryoet_monai.handlers import check_model_info, load_weights, trained_contrast, write_model_info

    weights = tmp_path / "models" / "model.pt"
    write_model_info(weights.parent, ["ribosome"], 20.0, contrast="bright")
    torch.save(torch.nn.Conv3d(1, 1, 1).state_dict(), weights)
    assert trained_contrast(weights) == "bright" and trained_contrast(None) == "dark"
    check_model_info(weights, ["ribosome"], 20.0, contrast="bright")
    with pytest.raises(ValueError, match="works on bright-protein images .* this run feeds it dark ones"):
        load_weights(torch.nn.Conv3d(1, 1, 1), weights, class_names=["ribosome"], voxel_size=20.0, contrast="dark")
    info = json.loads((weights.parent / "model_info.json").read_text())
    del info["contrast"]  # a file written before contrast was recorded: the default, said aloud
    (weights.parent / "model_info.json").write_text(json.dumps(info))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert trained_contrast(weights) == "dark"
    assert any("records no contrast" in str(w.message) for w in caught)
