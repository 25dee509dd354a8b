"""`run --safe` audit: configs execute code, so everything outside monai/torch/cryoet_monai is listed."""

import glob
from pathlib import Path

import pytest

from cryoet_monai.config_safety import audit_config, audit_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "config, flagged",
    [
        ({"x": "$os.system('rm -rf ~')"}, "os.system"),
        ({"x": "$os.path.os.system('id')"}, "os.path.os.system"),
        ({"x": {"_target_": "subprocess.run", "args": ["id"]}}, "imports 'subprocess'"),
        ({"x": "$__import__('os')"}, "__import__"),
        ({"x": "$@net.__class__.__init__"}, "dunder"),
        ({"imports": ["$import subprocess"]}, "imports ['subprocess']"),
        ({"x": "$open('/etc/passwd').read()"}, "'open' (a builtin)"),
        ({"x": "$eval('1')"}, "'eval' (a builtin)"),
        ({"x": {"_target_": "NoSuchComponent"}}, "not a MONAI component"),
        ({"imports": ["$import subprocess as sp"], "x": "$sp.run('id')"}, "imports ['subprocess']"),
        ({"x": "$lambda p: sp.run(p)"}, "uses 'sp'"),
    ],
)
def test_dangerous_entries_are_listed(config, flagged):
    findings = audit_config(config, "c.yaml")
    assert findings and flagged in findings[0] and all(f.startswith("c.yaml: ") for f in findings)


def test_ordinary_bundle_entries_pass():
    clean = {
        "imports": ["$import os", "$import torch", "$import cryoet_monai.data"],
        "out": "$os.path.join(@output_dir, 'models')",
        "net": {"_target_": "monai.networks.nets.UNet", "spatial_dims": 3},
        "load": {"_target_": "LoadImaged", "keys": "image"},
        "n": "$len(@class_names) + max(@a#b, 1)",
        "teacher": "$copy.deepcopy(@network)",
        "m": "$cryoet_monai.data.load_manifest(@manifest)",
        "imports2": ["$import torch.distributed as dist"],
        "rank": "$dist.get_rank() if dist.is_initialized() else int(os.environ.get('RANK', 0))",
        "f": "$lambda path: cryoet_monai.data.readers.read_image(path)[0]",
    }
    assert audit_config(clean) == []


def test_shipped_bundles_pass_the_audit():
    configs = sorted(glob.glob(str(ROOT / "bundles" / "*" / "configs" / "*.yaml")))
    assert configs, "no bundle configs found"
    assert audit_files(configs) == []
