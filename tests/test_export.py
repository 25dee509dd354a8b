"""`python -m monai.bundle ckpt_export` turns each bundle's shipped weights into TorchScript that matches the eager network."""

import json
import subprocess
import sys

import pytest
import torch
from monai.bundle import ConfigParser

from cryoet_monai.bundles import bundle_dir

EXPORTS = {"semietpicker": ("inference.yaml", {"num_classes": 6}), "sasi": ("inference.yaml", {"num_classes": 6})}


@pytest.mark.parametrize("bundle", sorted(EXPORTS))
def test_ckpt_export_to_torchscript(bundle, tmp_path):
    root = bundle_dir(bundle)
    config, overrides = EXPORTS[bundle]
    exported = tmp_path / f"{bundle}.ts"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(exported),
           "--ckpt_file", str(root / "models" / "model.pt"), "--meta_file", str(root / "configs" / "metadata.json"),
           "--config_file", str(root / "configs" / config)]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / config))
    parser.update(overrides)
    eager = parser.get_parsed_content("network_def")
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    eager.load_state_dict(state.get("model", state))
    eager.eval()
    scripted = torch.jit.load(str(exported)).eval()
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    shape = [1, image["num_channels"], *[s if isinstance(s, int) else 32 for s in image["spatial_shape"]]]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), rtol=1e-4, atol=1e-5)
