"""The CryoMAE bundle end to end: tiny pre-train + pick on a small synthetic micrograph, via monai.bundle run."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks, write_picks
from cryoet_monai.data.readers import read_image
from cryoet_monai.data.synthetic_2d import synthesize_micrographs
from cryoet_monai.inference.exemplar import select_exemplars
from cryoet_monai.metrics import score_picks

CONFIGS = bundle_dir("cryomae") / "configs"
TEMPLATES = Path("/work/shared/data/templates_10A")
TINY = {
    "window": 48,
    "network_def#hidden_size": 48,
    "network_def#mlp_dim": 96,
    "network_def#num_layers": 2,
    "network_def#decoder_num_layers": 1,
    "num_exemplars": 8,
}


def shared_block(path: Path) -> str:
    text = path.read_text()
    return text.split("# --- shared block (= common.yaml) ---\n", 1)[1].split("# --- end of shared block ---", 1)[0]


@pytest.mark.parametrize("name", ["pretrain.yaml", "pick.yaml", "pretrain_3d.yaml", "pick_3d.yaml"])
def test_configs_repeat_the_shared_block(name):
    common = (CONFIGS / "common.yaml").read_text().split("\n", 3)[3]
    assert shared_block(CONFIGS / name) == common
    yaml.safe_load((CONFIGS / name).read_text())


def test_metadata_names_the_configs():
    import json

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["name"] and meta["version"] and "network_data_format" in meta


@pytest.fixture(scope="module")
def micrographs(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth2d")
    return synthesize_micrographs(out, num_micrographs=2, shape=(192, 192), radius=10, num_particles=30, seed=1)


def test_synthetic_micrographs_and_manifest(micrographs):
    manifest = load_manifest(micrographs)
    assert manifest.ndim == 2 and manifest.class_names == ["particle"]
    assert [it.id for it in manifest.items("training")] == ["synth_000"]
    truth = manifest.truth("test")
    assert 15 <= len(truth) <= 30
    image, pixel_size = read_image(manifest.items("test")[0].image)
    assert image.shape == (192, 192) and pixel_size == pytest.approx(4.0)
    xy = truth[["x", "y"]].to_numpy()
    assert xy.min() >= 0 and xy.max() <= 191
    # particles stand out from the background on average (as recorded: protein dark)
    rows, cols = np.rint(xy[:, 1]).astype(int), np.rint(xy[:, 0]).astype(int)
    assert image[rows, cols].mean() < image.mean() - 0.3 * image.std() and manifest.contrast == "dark"


@pytest.mark.skipif(not TEMPLATES.is_dir(), reason="density templates not available")
def test_synthetic_micrographs_from_a_template(tmp_path):
    path = synthesize_micrographs(tmp_path, num_micrographs=1, shape=(160, 160), templates=TEMPLATES, template="1bxn.mrc",
                                  pixel_size=5, num_particles=6, num_decoys=6, decoy_template="1qvr.mrc")
    manifest = load_manifest(path)
    assert 5 < manifest.classes[0].radius < 20 and 3 <= len(manifest.truth("training")) <= 6  # decoys are not annotated


def test_pretrain_and_pick_find_planted_particles(micrographs, tmp_path, monkeypatch, capsys):
    from monai.bundle import run

    from cryoet_monai.cli import main

    monkeypatch.chdir(tmp_path)  # configs must not depend on the working directory
    manifest = load_manifest(micrographs)
    train = manifest.items("training")[0]
    exemplars = select_exemplars(train.picks, train.id, 8, seed=0)
    star = write_picks(exemplars, tmp_path / "exemplars.star")  # exemplars as users have them: a RELION STAR file
    common = {"manifest": str(micrographs), "output_dir": str(tmp_path / "out"), "exemplars_file": str(star), **TINY}
    run(config_file=str(CONFIGS / "pretrain.yaml"), reconstruction_warmup=10, epoch_length=30, batch_size=4, **common)
    assert (tmp_path / "out" / "models" / "model.pt").is_file()
    run(config_file=str(CONFIGS / "pick.yaml"), stride=8, **common)
    picks = read_picks(tmp_path / "out" / "picks.csv")
    assert set(picks["micrograph"]) == {"synth_001"}
    assert len(read_picks(tmp_path / "out" / "picks.star")) == len(picks)
    relion = read_picks(tmp_path / "out" / "relion" / "autopick.star", class_names=manifest.class_names)  # for RELION's Extract
    np.testing.assert_allclose(relion[["x", "y"]].to_numpy(), picks[["x", "y"]].to_numpy(), atol=1e-3)
    result = score_picks(picks, manifest, "test")["classes"]["particle"]
    radius = manifest.classes[0].radius
    chance = min(len(picks) * np.pi * (0.5 * radius) ** 2 / 192**2, 1.0)  # recall of as many random picks
    assert result["recall"] > max(0.5, 3 * chance), result
    assert result["precision"] > 0.5, result
    # the encoder learned the 10-px particles as they are (target 12: never up-sampled); a target that down-samples them
    # would show it particles at a scale it never saw, and is refused; one that leaves them as they are is not
    settings = [f"--{key}={value}" for key, value in {**common, "stride": 8, "target_radius_px": 8}.items()]
    assert main(["run", "cryomae", "pick", *settings]) == 2
    assert "model.pt was trained with target_radius_px 10 " in capsys.readouterr().err
    run(config_file=str(CONFIGS / "pick.yaml"), stride=8, target_radius_px=16, **common)


def _neighbour_correlation(image: np.ndarray) -> float:
    return float(np.corrcoef(image[:, :-1].ravel(), image[:, 1:].ravel())[0, 1])


def test_lowpass_smooths_after_down_sampling_and_turns_off_at_zero(micrographs):
    from monai.bundle import ConfigParser

    item = load_manifest(micrographs).items("test")[0].as_dict()
    images = {}
    for sigma in (0.0, 1.0):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "pick.yaml"))
        parser.update({"manifest": str(micrographs), "lowpass_sigma_px": sigma})
        images[sigma] = parser.get_parsed_content("preprocessing")(item)["image"][0].numpy()
    assert images[0.0].shape == images[1.0].shape
    assert images[1.0].std() == pytest.approx(1.0, abs=0.01)  # unit variance again after the low-pass
    assert _neighbour_correlation(images[1.0]) > _neighbour_correlation(images[0.0]) + 0.2


def test_pretraining_from_pretrained_weights_starts_from_them_and_skips_the_warmup(micrographs, tmp_path, capsys):
    import torch
    from monai.bundle import ConfigParser, run

    from cryoet_monai.cli import main

    common = {"manifest": str(micrographs), "batch_size": 2, **TINY}
    first = tmp_path / "mae"
    run(config_file=str(CONFIGS / "pretrain.yaml"), output_dir=str(first), self_cross_weight=0.0, reconstruction_warmup=2, **common)
    weights = first / "models" / "model.pt"
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "pretrain.yaml"))
    parser.update({**common, "pretrained": str(weights), "self_cross_iterations": 3})
    assert parser.get_parsed_content("reconstruction_warmup") == 0 and parser.get_parsed_content("epoch_length") == 3
    # at learning rate 0 the saved weights are the loaded ones, not a fresh initialisation
    second = tmp_path / "again"
    run(config_file=str(CONFIGS / "pretrain.yaml"), output_dir=str(second), pretrained=str(weights), self_cross_iterations=1,
        learning_rate=0.0, **common)
    loaded, saved = torch.load(weights, weights_only=True), torch.load(second / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)
    # weights learned at another particle scale do not fit (model_info.json records it)
    settings = {**common, "output_dir": tmp_path / "other", "pretrained": weights, "target_radius_px": 8}
    assert main(["run", "cryomae", "pretrain", *[f"--{key}={value}" for key, value in settings.items()]]) == 2
    assert "model.pt was trained with target_radius_px 10 " in capsys.readouterr().err


def test_generalist_pretraining_reconstructs_every_micrograph_and_resumes(micrographs, tmp_path):
    """pretrain_generalist.yaml over pretrain.yaml: masked reconstruction alone over every training micrograph (no
    exemplars needed), epoch checkpoints, and the same command with more epochs goes on from the last one."""
    import torch
    from monai.bundle import ConfigParser, run

    pool = json.loads(micrographs.read_text())
    pool["training"] = [{**item, "image": str(micrographs.parent / item["image"])} for item in pool["training"] + pool.pop("test")]
    for item in pool["training"]:
        item.pop("picks", None)
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    files = [str(CONFIGS / "pretrain.yaml"), str(CONFIGS / "pretrain_generalist.yaml")]
    common = {"manifest": str(tmp_path / "pool.json"), "output_dir": str(tmp_path / "mae"), "batch_size": 2, "epoch_length": 2, **TINY}
    parser = ConfigParser()
    parser.read_config(files)
    parser.update(common)
    assert [item["id"] for item in parser.get_parsed_content("train#dataset#data")] == ["synth_000", "synth_001"]
    run(config_file=files, max_epochs=1, **common)
    models = tmp_path / "mae" / "models"
    assert torch.load(models / "checkpoint_epoch=1.pt", weights_only=False)["trainer"]["iteration"] == 2
    run(config_file=files, max_epochs=2, **common)
    assert torch.load(models / "checkpoint_epoch=2.pt", weights_only=False)["trainer"]["iteration"] == 4
    assert json.loads((models / "model_info.json").read_text())["settings"]["target_radius_px"] == 10.0
