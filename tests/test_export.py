"""`python -m monai.bundle ckpt_export` turns each bundle's weights into TorchScript that matches the eager network."""

import subprocess
import sys

import pytest
import torch
from monai.bundle import ConfigParser

from cryoet_monai.bundles import bundle_dir

# name: (bundle, config, net_id, config overrides, extra ckpt_export arguments, input shape)
EXPORTS = {
    "semietpicker": ("semietpicker", "inference.yaml", "network_def", {"num_classes": 6}, [], [1, 1, 32, 64, 64]),
    "sasi": ("sasi", "inference.yaml", "network_def", {"num_classes": 6}, [], [1, 1, 32, 64, 64]),
    # CryoMAE: the encoder picking runs, traced (fixed window); spatial_dims given so no manifest is read
    "cryomae": ("cryomae", "pick.yaml", "encoder_def", {"spatial_dims": 2}, ["--use_trace", "True", "--input_shape", "[1, 1, 112, 112]"], [2, 1, 112, 112]),
    "cryomae_3d": ("cryomae", "pick_3d.yaml", "encoder_def", {"spatial_dims": 3}, ["--use_trace", "True", "--input_shape", "[1, 1, 48, 48, 48]"], [2, 1, 48, 48, 48]),
}


def eager_network(config, net_id: str, overrides: dict, ckpt) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update(overrides)
    net = parser.get_parsed_content(net_id)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state))
    return net.eval()


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_ckpt_export_to_torchscript(name, tmp_path):
    bundle, config, net_id, overrides, extra, shape = EXPORTS[name]
    root = bundle_dir(bundle)
    config = root / "configs" / config
    ckpt = root / "models" / "model.pt"
    if not ckpt.is_file() or name == "cryomae_3d":  # no shipped 3D CryoMAE weights: export a fresh network's
        parser = ConfigParser()
        parser.read_config(str(config))
        parser.update(overrides)
        ckpt = tmp_path / "model.pt"
        torch.save(parser.get_parsed_content("network_def").state_dict(), ckpt)
    exported = tmp_path / f"{name}.ts"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", net_id, "--filepath", str(exported), "--ckpt_file", str(ckpt),
           "--meta_file", str(root / "configs" / "metadata.json"), "--config_file", str(config), *extra]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    eager = eager_network(config, net_id, overrides, ckpt)
    scripted = torch.jit.load(str(exported)).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = eager(x)
        torch.testing.assert_close(scripted(x), expected, rtol=1e-4, atol=1e-5)
    assert expected.std() > 0, "a constant output would make the comparison meaningless"
