"""The SaSi bundle end to end on a tiny volume: pre-train, fine-tune, then pick with `python -m monai.bundle run`."""

import json
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
import pytest
from monai.bundle import run

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.picks import make_picks, read_picks, write_picks
from cryoet_monai.data.readers import write_mrc

CONFIGS = bundle_dir("sasi") / "configs"
TINY = ["--roi_size", "[32,32,32]", "--features", "[4,4,8,8,16,4]"]
SHARED_START, SHARED_END = "# --- shared block (= common.yaml) ---\n", "# --- end of shared block ---\n"


def _tomogram(path, centres_zyx, radii, shape=(32, 48, 48), seed=0):
    rng = np.random.default_rng(seed)
    volume = rng.normal(0, 0.3, shape).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    for centre, radius in zip(centres_zyx, radii):
        volume[np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius] += 2.0
    write_mrc(path, volume, 10.0)


def _manifest(root: Path) -> Path:
    classes = [{"name": "small", "radius": 30.0, "weight": 1}, {"name": "large", "radius": 50.0, "weight": 1}]
    centres = {"train": [(10, 12, 12), (20, 30, 30), (16, 12, 34)], "test": [(12, 30, 14), (20, 14, 30), (16, 34, 34)]}
    kinds = ["small", "large", "small"]
    raw = {"name": "tiny-sasi", "ndim": 3, "voxel_size": 10.0, "classes": classes}
    for split, item_id, seed in (("training", "train", 0), ("unlabeled", "unl", 1), ("test", "test", 2)):
        points = centres.get(item_id, [(16, 24, 24)])
        _tomogram(root / f"{item_id}.mrc", points, [3 if k == "small" else 5 for k in kinds], seed=seed)
        entry = {"id": item_id, "image": f"{item_id}.mrc"}
        if item_id != "unl":
            xyz = np.asarray(points, float)[:, ::-1] * 10.0
            write_picks(make_picks(item_id, kinds, xyz), root / f"{item_id}.csv")
            entry["picks"] = f"{item_id}.csv"
        if item_id == "train":
            entry["annotated"] = [[0, 0, 0, 470, 470, 310]]
        raw[split] = [entry]
    path = root / "manifest.json"
    path.write_text(json.dumps(raw))
    return path


def test_configs_repeat_the_common_block_verbatim():
    common = (CONFIGS / "common.yaml").read_text().split("\n", 2)[2]  # after its two comment lines
    for name in ("pretrain", "train", "inference", "evaluate"):
        text = (CONFIGS / f"{name}.yaml").read_text()
        assert text.split(SHARED_START)[1].split(SHARED_END)[0] == common, name
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    assert metadata["network_data_format"]["inputs"]["image"]["num_channels"] == 1


def _args(options):
    return {k.lstrip("-"): json.loads(v) if v.startswith("[") else v for k, v in zip(options[::2], options[1::2])}


def test_bundle_pretrains_trains_and_picks(tmp_path, monkeypatch):
    manifest = _manifest(tmp_path)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    common = {"manifest": str(manifest), "output_dir": str(out), **_args(TINY)}
    scratch = {"pretrained": "$None"}  # the SaSi recipe from random weights and the contrastive encoder
    run(config_file=str(CONFIGS / "pretrain.yaml"), max_epochs=1, batch_size=2, **common)
    assert (out / "models" / "encoder.pt").is_file()
    with pytest.raises(Exception) as raised:  # an encoder pre-trained at 10 Å, fine-tuned at 20 Å
        run(config_file=str(CONFIGS / "train.yaml"), max_epochs=1, epoch_length=2, target_voxel_size=20.0, **scratch, **common)
    assert "encoder.pt was trained at 10 Å per voxel" in "".join(traceback.format_exception(raised.value))
    run(config_file=str(CONFIGS / "train.yaml"), max_epochs=1, epoch_length=2, **{"infill#target_fraction": 0.2}, **scratch, **common)
    assert (out / "models" / "model.pt").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    picks_dir = tmp_path / "picks"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.yaml"),
               "--manifest", str(manifest), "--split", "test", "--output_dir", str(picks_dir),
               "--model_path", str(out / "models" / "model.pt"), *TINY, "--min_size_fraction", "0.0"]
    result = subprocess.run(command, cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    picks = read_picks(picks_dir / "picks.csv", ndim=3)
    assert list(picks.columns) == ["experiment", "particle_type", "x", "y", "z", "score"]
    assert set(picks["experiment"]) <= {"test"} and set(picks["particle_type"]) <= {"small", "large"}
    assert picks[["x", "y", "z"]].to_numpy().min(initial=0) >= 0

    # evaluate.yaml tunes a threshold per class on a labelled split; inference.yaml then keeps only what reaches it
    thresholds = tmp_path / "thresholds.json"
    tuning = {**common, "output_dir": str(tmp_path / "tuning"), "split": "test", "thresholds_path": str(thresholds), "min_size_fraction": 0.0}
    run(config_file=str(CONFIGS / "evaluate.yaml"), model_path=str(out / "models" / "model.pt"), **tuning)
    tuned = json.loads(thresholds.read_text())
    assert set(tuned) == {"small", "large"}
    assert json.loads((tmp_path / "tuning" / "metrics.json").read_text())["thresholds"] == tuned
    strict = {name: max(tuned.values()) for name in tuned}
    strict["small"] = 1.0  # no component's mean probability reaches 1
    thresholds.write_text(json.dumps(strict))
    run(config_file=str(CONFIGS / "inference.yaml"), model_path=str(out / "models" / "model.pt"), **{**tuning, "output_dir": str(tmp_path / "strict")})
    kept = read_picks(tmp_path / "strict" / "picks.csv", ndim=3)
    every = read_picks(tmp_path / "tuning" / "picks.csv", ndim=3)
    expected = every[(every["particle_type"] == "large") & (every["score"] >= strict["large"])]
    assert len(every) > len(expected) > 0
    assert sorted(kept["score"].round(3)) == sorted(expected["score"].round(3))


def test_training_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    manifest = _manifest(tmp_path)
    monkeypatch.chdir(tmp_path)
    common = {"manifest": str(manifest), "output_dir": str(tmp_path / "out"), "use_pretrained": False, "pretrained": "$None", "epoch_length": 2, **_args(TINY)}
    run(config_file=str(CONFIGS / "train.yaml"), max_epochs=1, **common)
    models = tmp_path / "out" / "models"
    assert torch.load(models / "checkpoint_epoch=1.pt", weights_only=False)["trainer"]["iteration"] == 2
    run(config_file=str(CONFIGS / "train.yaml"), max_epochs=2, **common)  # the same command, one epoch more
    assert torch.load(models / "checkpoint_epoch=2.pt", weights_only=False)["trainer"]["iteration"] == 4  # went on
    assert (models / "model.pt").is_file()


@pytest.mark.parametrize("config", ["pretrain", "train", "inference", "evaluate"])
def test_configs_parse_with_the_common_ids(config, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / f"{config}.yaml"))
    for key in ("manifest", "output_dir", "device", "bundle_root"):
        assert key in parser.config
    assert "split" in parser.config or config == "pretrain"
    assert Path(parser.get_parsed_content("bundle_root")) == bundle_dir("sasi")


def test_ablation_switches_remove_their_parts(tmp_path):
    from monai.bundle import ConfigParser

    from cryoet_monai.engines.consistency import ConsistencyGuidance
    from cryoet_monai.transforms.infill import RandVolumeInfilld

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update({"manifest": str(_manifest(tmp_path)), "output_dir": str(tmp_path / "out"), "consistency#weight": 0.0, "infill#enabled": False, "use_pretrained": False, "pretrained": None})
    handlers = parser.get_parsed_content("train#handlers")
    assert handlers and all(h is not None for h in handlers)
    assert not any(isinstance(h, ConsistencyGuidance) for h in handlers)
    augmentation = parser.get_parsed_content("train#augmentation")
    assert not any(isinstance(t, RandVolumeInfilld) for t in augmentation)


def test_training_fine_tunes_the_shipped_generalist_by_default(tmp_path):
    """No --pretrained: train.yaml loads the shipped generalist U-Net into the default network, all but final_conv,
    which starts afresh for the manifest's two classes (+ background); no contrastive encoder is looked for."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update({"manifest": str(_manifest(tmp_path)), "output_dir": str(tmp_path / "out")})
    generalist = bundle_dir("sasi") / "models" / "generalist"
    assert Path(parser.get_parsed_content("pretrained")) == generalist / "model.pt"
    assert parser.get_parsed_content("use_pretrained") is False
    assert parser.get_parsed_content("voxel_size") == json.loads((generalist / "model_info.json").read_text())["voxel_size"]
    loading = next(i for i, step in enumerate(parser["initialize"]) if "load_weights" in step)
    state = parser.get_parsed_content(f"initialize#{loading}").state_dict()
    shipped = torch.load(generalist / "model.pt", weights_only=True)
    head = {k for k in state if k.startswith("final_conv.")}
    assert head and state["final_conv.weight"].shape[0] == 3 != shipped["final_conv.weight"].shape[0]
    assert all(torch.equal(state[k], shipped[k]) for k in set(state) - head)


def test_training_batches_leave_the_cached_tomograms_untouched(tmp_path, assert_cache_untouched):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update({"manifest": str(_manifest(tmp_path)), "output_dir": str(tmp_path / "out"), **_args(TINY), "infill#target_fraction": 0.3, "pretrained": None})
    assert_cache_untouched(parser, ["train", "consistency"])


def test_shipped_weights_fit_the_default_network():
    import torch
    import yaml

    from cryoet_monai.networks.segmentation import segmentation_unet

    weights = bundle_dir("sasi") / "models" / "model.pt"
    if not weights.is_file():
        pytest.skip("no shipped weights")
    features = yaml.safe_load((CONFIGS / "common.yaml").read_text())["features"]
    network = segmentation_unet(6, features=features)  # the six CZII classes of the synthetic data
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    assert weights.stat().st_size < 5_000_000


def test_fine_tunes_whole_unet_weights_of_other_classes_at_their_voxel_size(tmp_path, monkeypatch):
    """--pretrained U-Net weights of three classes at 5 Å: the 10 Å tomograms are resampled to 5 Å, no contrastive
    encoder is looked for, and the model is for the manifest's two classes; --pretrained null trains at 10 Å."""
    from cryoet_monai.handlers import write_model_info
    from cryoet_monai.networks.segmentation import segmentation_unet

    manifest = _manifest(tmp_path)
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "generalist"
    source.mkdir()
    torch.save(segmentation_unet(3, _args(TINY)["features"]).state_dict(), source / "model.pt")
    write_model_info(source, ["a", "b", "c"], 5.0)
    common = {"manifest": str(manifest), "max_epochs": 1, "epoch_length": 2, "val_interval": 0, **_args(TINY)}
    run(config_file=str(CONFIGS / "train.yaml"), output_dir=str(tmp_path / "tuned"), pretrained=str(source / "model.pt"), **common)
    models = tmp_path / "tuned" / "models"
    assert json.loads((models / "model_info.json").read_text()) == {"class_names": ["small", "large"], "voxel_size": 5.0, "contrast": "dark", "class_radii": [30.0, 50.0]}
    assert torch.load(models / "model.pt")["final_conv.weight"].shape[0] == 3
    run(config_file=str(CONFIGS / "train.yaml"), output_dir=str(tmp_path / "scratch"), pretrained="$None", use_pretrained=False, **common)
    assert json.loads((tmp_path / "scratch" / "models" / "model_info.json").read_text())["voxel_size"] == 10.0


def test_generalist_pretraining_runs_on_a_pool_larger_than_its_cache(pretrain_generalist, tmp_path):
    """pretrain_generalist.yaml over train.yaml: the generalist pool through a smart cache of two, resampled to
    20.024 Å, no contrastive encoder; the weights record the 24 pre-training species."""
    from cryoet_monai.data.species import GENERALIST_SPECIES

    info = pretrain_generalist("sasi", tmp_path / "run", *TINY)
    assert info == {"class_names": [s.name for s in GENERALIST_SPECIES], "voxel_size": 20.024, "contrast": "dark", "class_radii": [s.radius for s in GENERALIST_SPECIES]}
    assert torch.load(tmp_path / "run" / "models" / "model.pt")["final_conv.weight"].shape[0] == len(GENERALIST_SPECIES) + 1
