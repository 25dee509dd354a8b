"""The SemiETPicker bundle: configs parse and share one common block, the network fits its metadata,
a short supervised run then sliding-window inference (from another directory) finds planted particles."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.cli import main
from cryoet_monai.data.manifest import ManifestError, load_manifest
from cryoet_monai.data.picks import make_picks, read_picks, write_picks
from cryoet_monai.data.readers import write_mrc
from cryoet_monai.data.star import star_geometry
from cryoet_monai.handlers import write_model_info
from cryoet_monai.metrics import score_picks
from cryoet_monai.networks import HeatmapNet

CONFIGS = bundle_dir("semietpicker") / "configs"
TOP_LEVEL = ["train.yaml", "train_semi.yaml", "inference.yaml", "evaluate.yaml"]
VOXEL = 10.0
SHAPE = (16, 40, 40)
SMALL = ["--roi_size", "[16, 32, 32]", "--network_def#filters", "[8, 16, 32]"]
SCRATCH = ["--pretrained", "$None"]  # random weights: the shipped generalist does not fit the small network


def _shared_block(text: str) -> str:
    return text[text.index("imports:") :].split("# --- end of shared block ---")[0]


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_configs_repeat_common_block_and_define_ids(name):
    text = (CONFIGS / name).read_text()
    assert _shared_block(text) == _shared_block((CONFIGS / "common.yaml").read_text())
    parser = ConfigParser()
    parser.read_config(CONFIGS / name)
    for key in ("manifest", "split", "output_dir", "device", "network_def", "run"):
        assert key in parser, f"{name} lacks '{key}'"


def _plant(root: Path, item_id: str, seed: int) -> dict:
    """A noisy volume with well separated dark balls (radius 40 Å) and dots (radius 20 Å): protein dark, as reconstructed."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    volume = rng.normal(0, 0.3, SHAPE).astype(np.float32)
    centres, classes = [], []
    while len(centres) < 6:
        c = rng.uniform([5, 5, 5], np.subtract(SHAPE, 6))
        if all(np.linalg.norm(c - p) > 10 for p in centres):
            centres.append(c)
            classes.append("ball" if len(centres) % 2 else "dot")
    for c, name in zip(centres, classes):
        radius = 4.0 if name == "ball" else 2.0
        volume[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2] -= 1.5
    write_mrc(root / f"{item_id}.mrc", volume, VOXEL)
    xyz = np.asarray(centres)[:, ::-1] * VOXEL
    write_picks(make_picks(item_id, classes, xyz), root / f"{item_id}.csv")
    return {"id": item_id, "image": f"{item_id}.mrc", "picks": f"{item_id}.csv"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    manifest = {
        "name": "planted",
        "ndim": 3,
        "voxel_size": VOXEL,
        "classes": [{"name": "ball", "radius": 40.0, "weight": 1}, {"name": "dot", "radius": 20.0, "weight": 1}],
        "training": [_plant(root, f"train_{k}", k) for k in range(2)],
        "validation": [_plant(root, "val_0", 10)],
        "test": [_plant(root, "test_0", 20)],
        "unlabeled": [{"id": "unl_0", "image": _plant(root, "unl_0", 30)["image"]}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root / "manifest.json"


@pytest.fixture(scope="module")
def czii_classes(tmp_path_factory):
    """A manifest with the six CZII classes the shipped weights and metadata describe, and no items."""
    from cryoet_monai.data.species import CZII_SPECIES

    path = tmp_path_factory.mktemp("czii") / "manifest.json"
    classes = [{"name": s.name, "radius": s.radius, "weight": s.weight} for s in CZII_SPECIES]
    path.write_text(json.dumps({"name": "czii-classes", "ndim": 3, "voxel_size": 25.0, "classes": classes}))
    return path


def test_network_matches_metadata_and_shipped_weights(czii_classes):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.yaml"),
        manifest=str(czii_classes),
    )
    parser = ConfigParser()
    parser.read_config(CONFIGS / "inference.yaml")
    parser["manifest"] = str(czii_classes)
    model = Path(parser.get_parsed_content("model_path"))
    if model.is_file():
        state = torch.load(model, map_location="cpu")
        parser.get_parsed_content("network_def").load_state_dict(state)
        assert model.stat().st_size < 8e6


def _bundle(config: str, cwd: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / config), *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr[-3000:]


def test_train_tune_thresholds_then_pick_from_another_directory(planted, tmp_path):
    train_dir, eval_dir, pick_dir = tmp_path / "train", tmp_path / "eval", tmp_path / "picks"
    common = ["--manifest", str(planted), *SMALL]
    _bundle("train.yaml", tmp_path, *common, *SCRATCH, "--output_dir", str(train_dir), "--max_epochs", "4", "--epoch_length", "5",
            "--crop_size", "[16, 32, 32]", "--num_samples", "2", "--learning_rate", "0.005", "--val_interval", "4")
    model = train_dir / "models" / "model.pt"
    assert model.is_file()
    info = json.loads((train_dir / "models" / "model_info.json").read_text())
    assert info == {"class_names": ["ball", "dot"], "voxel_size": VOXEL, "contrast": "dark", "class_radii": [40.0, 20.0]}
    validation = json.loads((train_dir / "validation" / "metrics.json").read_text())
    assert validation["classes"]["ball"]["recall"] > 0.5, "validation during training scores the real picks"
    best = json.loads((train_dir / "models" / "model_best.json").read_text())
    assert best == {"metric": "score", "value": pytest.approx(validation["score"]), "epoch": 4}, "one validation, at the end"
    final, kept = (torch.load(train_dir / "models" / name) for name in ("model.pt", "model_best.pt"))
    assert all(torch.equal(final[k], kept[k]) for k in final)
    thresholds = tmp_path / "thresholds.json"
    _bundle("evaluate.yaml", tmp_path, *common, "--output_dir", str(eval_dir), "--model_path", str(model),
            "--thresholds_path", str(thresholds))
    assert set(json.loads(thresholds.read_text())) == {"ball", "dot"}
    assert json.loads((eval_dir / "metrics.json").read_text())["classes"]["ball"]["recall"] > 0.5
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _bundle("inference.yaml", elsewhere, *common, "--split", "test", "--output_dir", str(pick_dir),
            "--model_path", str(model), "--thresholds_path", str(thresholds), "--formats", "['csv', 'star']")
    assert (pick_dir / "picks.star").is_file()
    result = score_picks(read_picks(pick_dir / "picks.csv"), load_manifest(planted), "test")
    assert result["classes"]["ball"]["recall"] >= 0.66, result
    assert result["classes"]["ball"]["precision"] >= 0.5, result

    # the same test tomogram stored at half the voxel size, picked with no flag: at the voxel size model_info.json
    # records; the picks land where those of the original did, and picks.star is in the 5 Å file's own frame
    fine = _at_voxel_size(planted, "test_0", VOXEL / 2, tmp_path / "fine")
    _bundle("inference.yaml", elsewhere, "--manifest", str(fine), *SMALL, "--split", "test", "--output_dir",
            str(tmp_path / "fine_picks"), "--model_path", str(model), "--thresholds_path", str(thresholds),
            "--formats", "['csv', 'star']")
    fine_picks = read_picks(tmp_path / "fine_picks" / "picks.csv")
    assert score_picks(fine_picks, load_manifest(fine), "test")["classes"]["ball"]["recall"] >= 0.66
    original = read_picks(pick_dir / "picks.csv")
    ball = fine_picks[fine_picks.particle_type == "ball"][["x", "y", "z"]].to_numpy()
    nearest = np.linalg.norm(ball[:, None] - original[original.particle_type == "ball"][["x", "y", "z"]].to_numpy(), axis=2)
    assert np.median(nearest.min(axis=1)) < VOXEL / 2, nearest.min(axis=1)
    star = read_picks(tmp_path / "fine_picks" / "picks.star", **star_geometry(load_manifest(fine)))
    np.testing.assert_allclose(star[["x", "y", "z"]].to_numpy(), fine_picks[["x", "y", "z"]].to_numpy(), atol=1e-3)

    # an inverted copy of the test tomogram (protein bright) declared "bright": the loader inverts it back, so the
    # model trained on dark data picks exactly what it picked in the original
    bright = _inverted_copy(planted, "test_0", tmp_path / "bright")
    _bundle("inference.yaml", elsewhere, "--manifest", str(bright), *SMALL, "--split", "test", "--output_dir",
            str(tmp_path / "bright_picks"), "--model_path", str(model), "--thresholds_path", str(thresholds))
    bright_picks = read_picks(tmp_path / "bright_picks" / "picks.csv")
    assert score_picks(bright_picks, load_manifest(bright), "test")["classes"]["ball"]["recall"] >= 0.66
    np.testing.assert_allclose(bright_picks[["x", "y", "z"]].to_numpy(), original[["x", "y", "z"]].to_numpy(), atol=1e-3)
    # declared "dark" instead, the same file is seen as the model never saw protein: the picks are not those
    manifest = json.loads(bright.read_text())
    (tmp_path / "bright" / "undeclared.json").write_text(json.dumps({**manifest, "contrast": "dark"}))
    _bundle("inference.yaml", elsewhere, "--manifest", str(tmp_path / "bright" / "undeclared.json"), *SMALL, "--split", "test",
            "--output_dir", str(tmp_path / "undeclared_picks"), "--model_path", str(model), "--thresholds_path", str(thresholds))
    undeclared = read_picks(tmp_path / "undeclared_picks" / "picks.csv")
    assert score_picks(undeclared, load_manifest(bright), "test")["classes"]["ball"]["recall"] < 0.66


def _inverted_copy(manifest_path: Path, item_id: str, out: Path) -> Path:
    """A one-item test manifest holding ``item_id`` multiplied by −1 and declared ``"contrast": "bright"``."""
    from cryoet_monai.data.readers import read_image

    manifest = json.loads(manifest_path.read_text())
    item = next(it for it in manifest["test"] if it["id"] == item_id)
    volume, voxel_size = read_image(manifest_path.parent / item["image"])
    out.mkdir()
    write_mrc(out / f"{item_id}.mrc", -volume, voxel_size)
    entry = {"id": item_id, "image": f"{item_id}.mrc", "picks": str(manifest_path.parent / item["picks"])}
    manifest.update(contrast="bright", training=[], validation=[], unlabeled=[], test=[entry])
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out / "manifest.json"


def _at_voxel_size(manifest_path: Path, item_id: str, voxel_size: float, out: Path) -> Path:
    """A one-item test manifest holding ``item_id`` resampled to ``voxel_size`` (same Å positions, same picks)."""
    from cryoet_monai.data.readers import read_image
    from cryoet_monai.transforms import ResampleToVoxelSize

    manifest = json.loads(manifest_path.read_text())
    item = next(it for it in manifest["test"] if it["id"] == item_id)
    volume, source = read_image(manifest_path.parent / item["image"])
    out.mkdir()
    fine = ResampleToVoxelSize(voxel_size)(torch.as_tensor(volume)[None], source)[0].numpy()
    write_mrc(out / f"{item_id}.mrc", fine, voxel_size)
    entry = {"id": item_id, "image": f"{item_id}.mrc", "picks": str(manifest_path.parent / item["picks"])}
    manifest.update(voxel_size=voxel_size, training=[], validation=[], unlabeled=[], test=[entry])
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out / "manifest.json"


@pytest.mark.parametrize("config", TOP_LEVEL)
def test_mixed_voxel_sizes_are_refused_unless_a_voxel_size_is_known(planted, tmp_path, config):
    """Tomograms at 10 and 20 Å: at their own voxel sizes the network would see particles at two scales. A run needs
    --target_voxel_size, or (picking) weights whose model_info.json records the voxel size to resample to."""
    from cryoet_monai.handlers import write_model_info
    from cryoet_monai.transforms import ResampleToVoxelSized

    manifest = json.loads(planted.read_text())
    manifest["test"] = [{**manifest["test"][0], "voxel_size": 2 * VOXEL, "image": str(planted.parent / "test_0.mrc"),
                         "picks": str(planted.parent / "test_0.csv")}]
    mixed = tmp_path / "manifest.json"
    mixed.write_text(json.dumps({**manifest, **{s: [{**it, **{k: str(planted.parent / it[k]) for k in ("image", "picks") if k in it}}
                                                    for it in manifest[s]] for s in ("training", "validation", "unlabeled")}}))
    picking = config in ("inference.yaml", "evaluate.yaml")
    parser = ConfigParser()
    parser.read_config(CONFIGS / config)
    parser["manifest"] = str(mixed)
    if picking:
        parser["model_path"] = str(tmp_path / "undescribed" / "model.pt")  # no model_info.json beside it
    else:
        parser["pretrained"] = None  # from random weights (the generalist would give its voxel size)
    with pytest.raises(Exception) as raised:
        parser.get_parsed_content("load_image")
    cause = raised.value
    while not isinstance(cause, ManifestError) and cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, ManifestError) and "'test_0' (20 Å)" in str(cause) and "target_voxel_size" in str(cause)

    def resampled_to():
        parser.parse(reset=True)
        return next(t for t in parser.get_parsed_content("load_image") if isinstance(t, ResampleToVoxelSized)).resample.voxel_size

    parser["target_voxel_size"] = 15.0
    assert resampled_to() == 15.0
    if picking:
        write_model_info(tmp_path / "described", ["ball", "dot"], 12.0)
        parser.update({"target_voxel_size": None, "model_path": str(tmp_path / "described" / "model.pt")})
        assert resampled_to() == 12.0


def test_training_labels_of_a_resampled_tomogram_sit_at_the_particles(planted):
    """--target_voxel_size 20 on 10 Å tomograms: the training heatmap peaks at each particle's Å position / 20."""
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config(CONFIGS / "train.yaml")
    parser.update({"manifest": str(planted), "target_voxel_size": 2 * VOXEL, "pretrained": None})
    item = parser.get_parsed_content("manifest_info").data_dicts("training")[0]
    data = Compose(parser.get_parsed_content("load_image") + parser.get_parsed_content("train#labels")[:2])(item)
    assert tuple(data["image"].shape[1:]) == tuple((n - 1) // 2 + 1 for n in SHAPE) and data["voxel_size"] == 2 * VOXEL
    truth = read_picks(planted.parent / item["picks"])
    heatmap = data["heatmap"][0].numpy()  # the first class, "ball"
    for x, y, z in truth[truth.particle_type == "ball"][["x", "y", "z"]].to_numpy():
        centre = np.round(np.array([z, y, x]) / (2 * VOXEL)).astype(int)
        window = heatmap[tuple(slice(max(c - 1, 0), c + 2) for c in centre)]
        assert window.max() > 0.5, (x, y, z)  # a peak within one voxel of the particle


def test_teacher_student_run_from_supervised_weights(planted, tmp_path):
    common = ["--manifest", str(planted), *SMALL, "--crop_size", "[16, 32, 32]", "--num_samples", "1"]
    _bundle("train.yaml", tmp_path, *common, *SCRATCH, "--output_dir", str(tmp_path / "sup"), "--max_epochs", "1", "--epoch_length", "1")
    _bundle("train_semi.yaml", tmp_path, *common, "--output_dir", str(tmp_path / "semi"), "--max_epochs", "1",
            "--epoch_length", "2", "--pretrained", str(tmp_path / "sup" / "models" / "model.pt"))
    checkpoint = torch.load(tmp_path / "semi" / "models" / "checkpoint_epoch=1.pt", weights_only=False)
    assert set(checkpoint) >= {"model", "teacher", "optimizer", "trainer"}
    assert checkpoint["trainer"]["iteration"] == 2
    assert (tmp_path / "semi" / "models" / "model.pt").is_file()


@pytest.mark.parametrize("config, loaders", [("train.yaml", ["train"]), ("train_semi.yaml", ["train", "unlabeled"])])
def test_training_batches_leave_the_cached_tomograms_untouched(planted, config, loaders, assert_cache_untouched):
    parser = ConfigParser()
    parser.read_config(CONFIGS / config)
    parser.update({"manifest": str(planted), "crop_size": [8, 16, 16], "pretrained": None})
    assert_cache_untouched(parser, loaders)


def test_training_crops_are_centred_on_a_rare_class_as_often_as_on_a_common_one(tmp_path):
    """1 labeled particle of the first class and 12 of another: crops drawn class by class put the rare
    particle in about a third of them (background and each class alike). Drawn in proportion to labeled
    voxels it would be in about 2/3 × 1/13 = 0.05 of them; MONAI's positive/negative sampler on the heatmap,
    which takes channel 0 for background, centred none on the first class (0.008 of crops held it)."""
    shape = (16, 64, 96)
    rng = np.random.default_rng(0)
    write_mrc(tmp_path / "t.mrc", rng.normal(0, 1, shape).astype(np.float32), VOXEL)
    common = [(8, y, x) for y in (10, 26, 42, 54) for x in (10, 25, 40)]
    rare = (8, 32, 80)  # no crop (16 × 16 in y, x) holds it and a common particle
    xyz = np.asarray([*common, rare], dtype=float)[:, ::-1] * VOXEL
    write_picks(make_picks("t", ["common"] * len(common) + ["rare"], xyz), tmp_path / "t.csv")
    classes = [{"name": "rare", "radius": 40.0, "weight": 1}, {"name": "common", "radius": 40.0, "weight": 1}]
    manifest = {"name": "rare", "ndim": 3, "voxel_size": VOXEL, "classes": classes, "training": [{"id": "t", "image": "t.mrc", "picks": "t.csv"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    parser = ConfigParser()
    parser.read_config(CONFIGS / "train.yaml")
    parser.update({"manifest": str(tmp_path / "manifest.json"), "crop_size": [8, 16, 16], "pretrained": None})
    dataset = parser.get_parsed_content("train#dataset")
    crops = [crop for _ in range(60) for crop in dataset[0]]
    with_rare = np.mean([crop["label"][0].max().item() > 0.99 for crop in crops])
    assert 0.2 < with_rare < 0.5, with_rare


def test_training_fine_tunes_the_shipped_generalist_by_default(planted):
    """No --pretrained: train.yaml's weight loading puts the shipped generalist's backbone into the default network with
    a fresh output head for the manifest's two classes, at the generalist's voxel size, on the short schedule."""
    parser = ConfigParser()
    parser.read_config(CONFIGS / "train.yaml")
    parser.update({"manifest": str(planted)})
    generalist = bundle_dir("semietpicker") / "models" / "generalist"
    assert Path(parser.get_parsed_content("pretrained")) == generalist / "model.pt"
    assert parser.get_parsed_content("voxel_size") == json.loads((generalist / "model_info.json").read_text())["voxel_size"] != VOXEL
    assert parser.get_parsed_content("max_epochs") * parser.get_parsed_content("epoch_length") == 400
    loading = next(i for i, step in enumerate(parser["initialize"]) if "load_weights" in step)
    state = parser.get_parsed_content(f"initialize#{loading}").state_dict()
    shipped = torch.load(generalist / "model.pt", weights_only=True)
    head = {k for k in state if k.startswith("output_block.")}
    assert head and all(state[k].shape[0] == 2 and shipped[k].shape[0] == 24 for k in head if k.endswith("conv.weight"))
    assert all(torch.equal(state[k], shipped[k]) for k in set(state) - head)


def test_fine_tuning_weights_of_other_classes_at_another_voxel_size(planted, tmp_path):
    """--pretrained weights of three other classes at 5 Å: the planted 10 Å tomograms are resampled to 5 Å, the backbone
    is loaded and the run's model is for the manifest's two classes; without them training works at the manifest's 10 Å."""
    torch.manual_seed(0)
    source = tmp_path / "generalist"
    source.mkdir()
    torch.save(HeatmapNet(3, filters=(8, 16, 32)).state_dict(), source / "model.pt")
    write_model_info(source, ["a", "b", "c"], 5.0)
    common = ["--manifest", str(planted), *SMALL, "--crop_size", "[16, 32, 32]", "--num_samples", "1", "--max_epochs", "1", "--epoch_length", "2"]
    _bundle("train.yaml", tmp_path, *common, "--output_dir", str(tmp_path / "tuned"), "--pretrained", str(source / "model.pt"))
    info = json.loads((tmp_path / "tuned" / "models" / "model_info.json").read_text())
    assert info == {"class_names": ["ball", "dot"], "voxel_size": 5.0, "contrast": "dark", "class_radii": [40.0, 20.0]}
    tuned = torch.load(tmp_path / "tuned" / "models" / "model.pt")
    assert tuned["output_block.conv.conv.weight"].shape[0] == 2
    assert main(["run", "semietpicker", "train", *common, "--output_dir", str(tmp_path / "scratch"), "--pretrained", "null"]) == 0
    assert json.loads((tmp_path / "scratch" / "models" / "model_info.json").read_text())["voxel_size"] == VOXEL


def test_generalist_pretraining_runs_on_a_pool_larger_than_its_cache(pretrain_generalist, tmp_path):
    """pretrain_generalist.yaml over train.yaml: four small generalist tomograms at their own voxel sizes, two in the
    smart cache at a time, resampled to 20.024 Å; the weights record the 24 pre-training species."""
    from cryoet_monai.data.species import GENERALIST_SPECIES

    info = pretrain_generalist("semietpicker", tmp_path / "run", *SMALL, "--crop_size", "[16, 32, 32]", "--num_samples", "1")
    assert info == {"class_names": [s.name for s in GENERALIST_SPECIES], "voxel_size": 20.024, "contrast": "dark", "class_radii": [s.radius for s in GENERALIST_SPECIES]}
