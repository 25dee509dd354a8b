"""Where the project's MONAI bundles live, so configs and the runner work from any directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

BUNDLES_ENV = "CRYOET_MONAI_BUNDLES"


def bundles_root() -> Path:
    """The folder holding the bundles: ``$CRYOET_MONAI_BUNDLES`` or ``bundles/`` beside the package."""
    if os.environ.get(BUNDLES_ENV):
        return Path(os.environ[BUNDLES_ENV]).resolve()
    return Path(__file__).resolve().parent.parent / "bundles"


def available_bundles() -> list[str]:
    """Names of the bundles that have a ``configs`` folder."""
    root = bundles_root()
    return sorted(p.name for p in root.iterdir() if (p / "configs").is_dir()) if root.is_dir() else []


def bundle_dir(name: str) -> Path:
    """Folder of bundle ``name`` (a bundle name, or a path to a bundle folder).

    Args:
        name: ``semietpicker``, ``sasi``, ``cryomae``, or a path to any bundle folder.

    Raises:
        FileNotFoundError: naming the bundles that exist.
    """
    candidate = Path(name)
    if (candidate / "configs").is_dir():
        return candidate.resolve()
    path = bundles_root() / name
    if not (path / "configs").is_dir():
        raise FileNotFoundError(
            f"no bundle '{name}' in {bundles_root()} (available: {available_bundles() or 'none'}); "
            f"set {BUNDLES_ENV} to the folder that holds your bundles"
        )
    return path


def trained_or_shipped_model(output_dir, bundle_root) -> str:
    """``<output_dir>/models/model.pt`` when a training run left one there, else the bundle's shipped model (with a warning).

    Args:
        output_dir: the run's output folder, where training writes ``models/model.pt``.
        bundle_root: the bundle folder holding ``models/model.pt``.
    """
    trained = Path(output_dir) / "models" / "model.pt"
    if trained.is_file():
        return str(trained)
    shipped = Path(bundle_root) / "models" / "model.pt"
    logging.getLogger(__name__).warning(f"no trained model in {trained.parent}; using the shipped model {shipped} (--model_path chooses one)")
    return str(shipped)
