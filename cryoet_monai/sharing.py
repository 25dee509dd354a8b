"""Portable bundles: pack a bundle into a zip with versions and SHA-256 checksums, verify one received.

``pack_bundle`` writes ``configs/``, ``models/``, ``docs/`` and ``LICENSE`` into a zip whose
``configs/metadata.json`` gains ``packed_with`` (library versions at packing time) and ``sha256`` (a
checksum per file). ``verify_bundle`` checks a zip or folder: required metadata, versions against the
installed ones, checksums, the network's input/output shapes (``monai.bundle.verify_net_in_out``) and
the config audit of :mod:`cryoet_monai.config_safety`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.config_safety import audit_files
from cryoet_monai.data.atomic import atomic_path

PACKED_PARTS = ("configs", "models", "docs", "LICENSE")
REQUIRED_METADATA = ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "network_data_format")


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_versions() -> dict[str, str]:
    import monai
    import numpy
    import torch

    import cryoet_monai

    return {"monai": monai.__version__, "torch": torch.__version__, "numpy": numpy.__version__, "cryoet_monai": cryoet_monai.__version__}


def bundle_files(root: Path) -> list[Path]:
    """Files that travel with a bundle (relative paths), metadata excluded."""
    files = []
    for part in PACKED_PARTS:
        path = root / part
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        files += [p.relative_to(root) for p in candidates if "__pycache__" not in p.parts and not p.name.startswith(".")]
    return [f for f in files if f.as_posix() != "configs/metadata.json"]


def pack_bundle(bundle: str, out) -> Path:
    """Zip a bundle with its checksums and packing versions in ``configs/metadata.json``.

    Args:
        bundle: bundle name or folder.
        out: the zip to write (atomically).
    """
    root = bundle_dir(bundle)
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    files = bundle_files(root)
    metadata["packed_with"] = installed_versions()
    metadata["sha256"] = {f.as_posix(): sha256(root / f) for f in files}
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(root / f, f"{root.name}/{f.as_posix()}")
            zf.writestr(f"{root.name}/configs/metadata.json", json.dumps(metadata, indent=2) + "\n")
    return out


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def network_check(metadata: dict) -> dict:
    """What the network check builds, from ``metadata["network_check"]`` (defaults: MONAI's conventions).

    ``config_file``: a config in ``configs/`` (default ``inference.yaml``); ``net_id``: the network whose
    input/output shapes ``verify_net_in_out`` tests against ``network_data_format`` (default ``network_def``);
    ``override``: config values that normally come from a manifest (e.g. ``{"num_classes": 6}``). The weights
    always load into ``network_def`` of that config.

    Raises:
        ValueError: when ``network_check`` is not such a dict or names a file outside ``configs/``.
    """
    declared = metadata.get("network_check", {})
    if not isinstance(declared, dict) or set(declared) - {"config_file", "net_id", "override"}:
        raise ValueError("metadata.json: 'network_check' must be a dict with keys 'config_file', 'net_id', 'override'")
    check = {"config_file": "inference.yaml", "net_id": "network_def", "override": {}, **declared}
    name = check["config_file"]
    if not isinstance(name, str) or Path(name).name != name or Path(name).suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"metadata.json: network_check 'config_file' must name a YAML or JSON file in configs/, got {name!r}")
    if not isinstance(check["net_id"], str) or not isinstance(check["override"], dict):
        raise ValueError("metadata.json: network_check 'net_id' must be a config id and 'override' a dict")
    return check


def _check_network(root: Path, metadata: dict) -> list[str]:
    """Network input/output shapes against the metadata, and the shipped weights against the network."""
    import torch
    from monai.bundle import ConfigParser, verify_net_in_out

    try:
        check = network_check(metadata)
    except ValueError as err:
        return [str(err)]
    config = root / "configs" / check["config_file"]
    if not config.is_file():
        return [f"configs/{config.name}: missing (metadata.json's network_check builds the network from it)"]
    net_id, overrides = check["net_id"], check["override"]
    try:
        verify_net_in_out(net_id=net_id, meta_file=str(root / "configs" / "metadata.json"), config_file=str(config), device="cpu", **overrides)
    except Exception as err:
        return [f"configs/{config.name}: network input/output check failed for '{net_id}': {type(err).__name__}: {err}"]
    problems = []
    for weights in (root / "models" / "model.pt", root / "models" / "generalist" / "model.pt"):
        if not weights.is_file():
            continue
        settings = dict(overrides)
        info = weights.with_name("model_info.json")
        class_names = json.loads(info.read_text()).get("class_names") if info.is_file() else None
        if class_names:  # weights have an output channel per class they were trained for (the bundles' num_classes)
            settings["num_classes"] = len(class_names)
        parser = ConfigParser()
        parser.read_config(str(config))
        parser.update(settings)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            parser.get_parsed_content("network_def").load_state_dict(state.get("model", state), strict=True)
        except Exception as err:
            name = weights.relative_to(root).as_posix()
            problems.append(f"{name} does not load into the network 'network_def' of configs/{config.name}: {type(err).__name__}: {str(err).splitlines()[0]}")
    return problems


def verify_bundle(path, check_network: bool = True) -> tuple[list[str], list[str]]:
    """Check a bundle zip or folder before trusting it.

    Args:
        path: a zip written by :func:`pack_bundle`, or a bundle folder.
        check_network: also build the network and run ``verify_net_in_out``.

    Returns:
        ``(problems, warnings)``: problems make the bundle unusable (bad checksum, missing metadata, failing
        network check, code outside monai/torch/cryoet_monai in a config); warnings are version differences.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                zf.extractall(tmp)
            roots = [p for p in Path(tmp).iterdir() if (p / "configs").is_dir()]
            if len(roots) != 1:
                return [f"{path}: the zip must hold exactly one bundle folder with configs/"], []
            root = roots[0]
        else:
            root = bundle_dir(str(path))
        meta_path = root / "configs" / "metadata.json"
        if not meta_path.is_file():
            return [f"{path}: no configs/metadata.json"], []
        metadata = json.loads(meta_path.read_text())
        problems = [f"metadata.json: missing '{key}'" for key in REQUIRED_METADATA if key not in metadata]
        warnings = []
        installed, packed_with = installed_versions(), metadata.get("packed_with", {})
        for key, lib in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
            made_with = packed_with.get(lib, metadata.get(key))  # the packer's environment, when recorded
            if made_with is not None and _major_minor(made_with) != _major_minor(installed[lib]):
                warnings.append(f"bundle made with {lib} {made_with}, installed {installed[lib]}")
        checksums = metadata.get("sha256")
        if checksums is None:
            warnings.append("no sha256 checksums in metadata.json (an unpacked bundle folder?)")
        else:
            present = {f.as_posix() for f in bundle_files(root)}
            problems += [f"{name}: listed in metadata but missing" for name in sorted(set(checksums) - present)]
            problems += [f"{name}: not covered by the checksums" for name in sorted(present - set(checksums))]
            problems += [f"{name}: SHA-256 mismatch (modified or corrupt)" for name in sorted(set(checksums) & present) if sha256(root / name) != checksums[name]]
        problems += audit_files(sorted((root / "configs").glob("*.yaml")) + sorted((root / "configs").glob("*.json")), root)
        if check_network and not problems and "network_data_format" in metadata:
            problems += _check_network(root, metadata)
    return problems, warnings
