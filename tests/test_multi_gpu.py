"""multi_gpu.yaml under torchrun: a 2-process gloo (CPU) DDP training step for the SemiETPicker and SaSi bundles."""

import os
import subprocess
import sys

import pytest
import torch

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.synthetic import synthesize

SMALL = ["--roi_size", "[16, 32, 32]", "--max_epochs", "1", "--epoch_length", "2", "--num_samples", "1", "--batch_size", "1"]


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("tiny"), preset="tiny", seed=0, progress=False)


def torchrun(bundle: str, configs: list[str], overrides: list[str], out):
    files = [str(bundle_dir(bundle) / "configs" / c) for c in configs]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "--config_file", str(files)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd + overrides + ["--output_dir", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_semietpicker_two_process_gloo_training(tiny_manifest, tmp_path):
    log = torchrun("semietpicker", ["train.yaml", "multi_gpu.yaml"], ["--manifest", str(tiny_manifest), *SMALL, "--network_def#filters", "[4, 8, 16]"], tmp_path)
    assert "gloo" in log or "Epoch[1] Complete" in log
    final = tmp_path / "models" / "model.pt"
    assert final.is_file()
    state = torch.load(final, map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state), "the saved model must be the unwrapped network"
    assert len(list((tmp_path / "models").glob("checkpoint_*.pt"))) == 1, "only rank 0 writes checkpoints"


def test_sasi_two_process_gloo_training(tiny_manifest, tmp_path):
    torchrun("sasi", ["train.yaml", "multi_gpu.yaml"], ["--manifest", str(tiny_manifest), *SMALL, "--use_pretrained", "False"], tmp_path)
    assert list((tmp_path / "models").glob("*.pt"))
