"""Bundle sharing: pack with checksums, verify (metadata, checksums, network shapes, audit), --safe refusal."""

import json
import zipfile

import pytest
import torch
from monai.networks.nets import UNet

from cryoet_monai.cli import main
from cryoet_monai.sharing import pack_bundle, verify_bundle

INFERENCE = """
imports: ["$import torch"]
num_classes: 2
network_def:
  _target_: monai.networks.nets.UNet
  spatial_dims: 3
  in_channels: 1
  out_channels: "@num_classes"
  channels: [4, 8]
  strides: [2]
run: ["$print('ran')"]
"""

METADATA = {
    "version": "0.1.0",
    "changelog": {"0.1.0": "first"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "2.4.6",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "magnitude", "num_channels": 1, "spatial_shape": [16, 16, 16], "dtype": "float32", "value_range": [], "is_patch_data": True, "channel_def": {"0": "image"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2, "spatial_shape": [16, 16, 16], "dtype": "float32", "value_range": [], "is_patch_data": True, "channel_def": {"0": "a", "1": "b"}}},
    },
}


@pytest.fixture
def toy_bundle(tmp_path):
    root = tmp_path / "toy"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "docs").mkdir()
    (root / "configs" / "inference.yaml").write_text(INFERENCE)
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=[4, 8], strides=[2])
    torch.save(net.state_dict(), root / "models" / "model.pt")
    (root / "docs" / "README.md").write_text("# toy\n")
    (root / "LICENSE").write_text("Apache-2.0\n")
    return root


def test_pack_then_verify_round_trip(toy_bundle, tmp_path):
    archive = pack_bundle(str(toy_bundle), tmp_path / "toy.zip")
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        metadata = json.loads(zf.read("toy/configs/metadata.json"))
    assert {"toy/configs/inference.yaml", "toy/models/model.pt", "toy/docs/README.md", "toy/LICENSE"} <= names
    assert set(metadata["sha256"]) == {"configs/inference.yaml", "models/model.pt", "docs/README.md", "LICENSE"}
    assert metadata["packed_with"]["monai"]
    problems, _ = verify_bundle(archive)
    assert problems == []


def test_verify_detects_tampering_and_bad_network(toy_bundle, tmp_path):
    archive = pack_bundle(str(toy_bundle), tmp_path / "toy.zip")
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"evil weights" if name.endswith("model.pt") else src.read(name))
    problems, _ = verify_bundle(tampered)
    assert problems == ["models/model.pt: SHA-256 mismatch (modified or corrupt)"]

    other = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=[8, 16], strides=[2])
    torch.save(other.state_dict(), toy_bundle / "models" / "model.pt")
    problems, _ = verify_bundle(pack_bundle(str(toy_bundle), tmp_path / "wrong_weights.zip"))
    assert len(problems) == 1 and "does not load into the network" in problems[0]

    metadata = dict(METADATA, network_data_format=json.loads(json.dumps(METADATA["network_data_format"])))
    metadata["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
    (toy_bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    problems, _ = verify_bundle(pack_bundle(str(toy_bundle), tmp_path / "bad.zip"))
    assert len(problems) == 1 and "network input/output check failed" in problems[0]


def test_verify_loads_the_pretrained_weights_for_the_classes_they_record(toy_bundle, tmp_path):
    """models/generalist/model.pt: weights for the classes of its model_info.json (3 here, the network check's 2) load;
    weights of another network are named as the problem."""
    generalist = toy_bundle / "models" / "generalist"
    generalist.mkdir()
    (generalist / "model_info.json").write_text(json.dumps({"class_names": ["a", "b", "c"], "voxel_size": 10.0, "contrast": "dark"}))
    torch.save(UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2]).state_dict(), generalist / "model.pt")
    assert verify_bundle(pack_bundle(str(toy_bundle), tmp_path / "with_generalist.zip"))[0] == []

    torch.save(UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=[8, 16], strides=[2]).state_dict(), generalist / "model.pt")
    problems, _ = verify_bundle(pack_bundle(str(toy_bundle), tmp_path / "wrong_generalist.zip"))
    assert len(problems) == 1 and problems[0].startswith("models/generalist/model.pt does not load into the network"), problems


def test_unsafe_config_is_listed_and_refused(toy_bundle, tmp_path, capsys):
    (toy_bundle / "configs" / "inference.yaml").write_text(INFERENCE.replace("$print('ran')", "$__import__('os').system('touch pwned')"))
    problems, _ = verify_bundle(pack_bundle(str(toy_bundle), tmp_path / "toy.zip"), check_network=False)
    assert len(problems) == 1 and "__import__" in problems[0]
    assert main(["run", str(toy_bundle), "inference", "--safe"]) == 2
    err = capsys.readouterr().err
    assert "refusing to run" in err and "run#0" in err
    assert not (tmp_path / "pwned").exists()


def rewrite_zip(archive, out, change) -> None:
    """Copy a zip, passing each member's bytes through ``change(name, data)``."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, change(name, src.read(name)))


@pytest.mark.parametrize("bundle", ["semietpicker", "sasi", "cryomae"])
def test_every_shipped_bundle_packs_and_verifies(bundle, tmp_path):
    archive = pack_bundle(bundle, tmp_path / f"{bundle}.zip")
    problems, warnings = verify_bundle(archive)
    assert problems == [], f"{bundle}: {problems}"
    assert not [w for w in warnings if "made with" in w], "packed and verified in the same environment"

    def packed_elsewhere(name, data):
        if not name.endswith("configs/metadata.json"):
            return data
        metadata = json.loads(data)
        metadata["packed_with"]["numpy"] = "1.26.4"
        return json.dumps(metadata).encode()

    elsewhere = tmp_path / "elsewhere.zip"
    rewrite_zip(archive, elsewhere, packed_elsewhere)
    problems, warnings = verify_bundle(elsewhere, check_network=False)
    assert problems == [] and any(w.startswith("bundle made with numpy 1.26.4") for w in warnings)

    flipped = tmp_path / "flipped.zip"
    rewrite_zip(archive, flipped, lambda name, data: data[:-1] + bytes([data[-1] ^ 1]) if name.endswith("/models/model.pt") else data)
    assert verify_bundle(flipped)[0] == ["models/model.pt: SHA-256 mismatch (modified or corrupt)"]

    def wrong_channels(name, data):
        if not name.endswith("configs/metadata.json"):
            return data
        metadata = json.loads(data)
        next(iter(metadata["network_data_format"]["outputs"].values()))["num_channels"] += 1
        return json.dumps(metadata).encode()

    wrong = tmp_path / "wrong.zip"
    rewrite_zip(archive, wrong, wrong_channels)
    problems, _ = verify_bundle(wrong)
    assert len(problems) == 1 and "network input/output check failed" in problems[0], problems


def test_network_check_names_a_config_inside_configs(toy_bundle, tmp_path):
    metadata = dict(METADATA, network_check={"config_file": "../../elsewhere.yaml"})
    (toy_bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    problems, _ = verify_bundle(pack_bundle(str(toy_bundle), tmp_path / "toy.zip"))
    assert problems == ["metadata.json: network_check 'config_file' must name a YAML or JSON file in configs/, got '../../elsewhere.yaml'"]
    metadata["network_check"] = {"config_file": "pick.yaml"}
    (toy_bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    problems, _ = verify_bundle(pack_bundle(str(toy_bundle), tmp_path / "toy.zip"))
    assert problems == ["configs/pick.yaml: missing (metadata.json's network_check builds the network from it)"]
