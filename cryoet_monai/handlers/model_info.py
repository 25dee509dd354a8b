"""What a model folder's weights were trained for: ``model_info.json`` beside them, written by training, checked
when weights are loaded.

A heatmap network's output channel ``c`` means the ``c``-th class of the manifest it was trained on, at the voxel
size it saw. Weights trained on ``[ribosome, apo-ferritin]`` load into a network for ``[apo-ferritin, ribosome]``
without complaint and label every pick with the other class; a model trained at 25 Å per voxel picks 10 Å tomograms
with particles 2.5 times the size it learned; a CryoMAE encoder pre-trained with particles down-sampled to 16 px
radius matches exemplars at 12 px to nothing it learned; a network trained on protein-dark tomograms sees bright
ones as holes. The folder says what its weights are: picking follows its voxel size and contrast polarity (the
tomograms are resampled and inverted to match as they are loaded) and refuses other classes or settings.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.utils import min_version, optional_import

from cryoet_monai.data.contrast import DEFAULT_CONTRAST, check_contrast

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

MODEL_INFO = "model_info.json"


def model_info_path(weights) -> Path:
    """The ``model_info.json`` that describes a weights file (one per folder)."""
    return Path(weights).parent / MODEL_INFO


def write_model_info(
    folder,
    class_names: Sequence[str] | None,
    voxel_size: float | None,
    settings: Mapping[str, float] | None = None,
    contrast: str | None = DEFAULT_CONTRAST,
    provenance: Mapping | None = None,
    class_radii: Sequence[float] | None = None,
) -> Path:
    """Write ``<folder>/model_info.json`` (atomically).

    Args:
        folder: the folder of the weights.
        class_names: classes in output-channel order (None: the weights are not tied to classes).
        voxel_size: Å per voxel the network works at (None: not tied to one).
        settings: config values the weights only fit when picking uses them too, e.g. ``{"target_radius_px": 16}``.
        contrast: the polarity the network works in (``"dark"``: protein darker than ice), None: not tied to one.
        provenance: how shipped weights were made (data, schedule, cost; JSON values), recorded for readers and never
            checked.
        class_radii: particle radius (Å) of each class, in channel order: fine-tuning to other classes starts each
            new output channel from the trained channel of the nearest radius (:func:`load_weights`).
    """
    from cryoet_monai.data.atomic import atomic_path

    info = {
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "voxel_size": None if voxel_size is None else float(voxel_size),
        "contrast": None if contrast is None else check_contrast(contrast, "model_info"),
    }
    if settings:
        info["settings"] = {str(k): float(v) for k, v in settings.items()}
    if class_radii is not None:
        info["class_radii"] = [float(r) for r in class_radii]
    if provenance:
        info["provenance"] = dict(provenance)
    path = Path(folder) / MODEL_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return path


def read_model_info(weights) -> dict | None:
    """What the ``model_info.json`` beside a weights file says: ``class_names`` (channel order or None), ``voxel_size``
    (Å or None), ``contrast`` (the network's polarity, or None where the file predates it), ``settings``
    (``{name: value}``) and ``class_radii`` (Å per class, or None); None without one.

    Raises:
        ValueError: a ``model_info.json`` that cannot be read.
    """
    path = model_info_path(weights)
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        classes, voxel_size, contrast = info["class_names"], info["voxel_size"], info.get("contrast")
        return {
            "class_names": None if classes is None else [str(c) for c in classes],
            "voxel_size": None if voxel_size is None else float(voxel_size),
            "contrast": None if contrast is None else check_contrast(contrast, str(path)),
            "settings": {str(k): float(v) for k, v in info.get("settings", {}).items()},
            "class_radii": None if info.get("class_radii") is None else [float(r) for r in info["class_radii"]],
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable model description ({err}); it describes {weights}") from err


def trained_voxel_size(weights) -> float | None:
    """The voxel size (Å) a weights file was trained at, from the ``model_info.json`` beside it (None without one, or
    for no weights)."""
    info = read_model_info(weights) if weights is not None else None
    return None if info is None else info["voxel_size"]


def trained_contrast(weights) -> str:
    """The polarity a weights file's network works in: what its ``model_info.json`` records, else the contract's
    default, ``dark`` (no weights, no file, or a file that predates the record)."""
    info = read_model_info(weights) if weights is not None else None
    if info is not None and info["contrast"] is None:
        warnings.warn(
            f"{model_info_path(weights)} records no contrast (written before contrast became part of it); {weights} is "
            f"taken to work on {DEFAULT_CONTRAST}-protein tomograms",
            stacklevel=2,
        )
    return (info or {}).get("contrast") or DEFAULT_CONTRAST


def check_model_info(
    weights,
    class_names: Sequence[str] | None = None,
    voxel_size: float | None = None,
    settings: Mapping[str, float] | None = None,
    tolerance: float = 0.01,
    contrast: str | None = None,
) -> None:
    """Refuse weights whose ``model_info.json`` names other classes (or another order), another voxel size, another
    contrast polarity or other values of the settings it records.

    Weights without a ``model_info.json`` beside them are not checked; neither is what it or this run leaves out.

    Args:
        weights: the weights file.
        class_names: classes of this run in output-channel order (not checked when None).
        voxel_size: Å per voxel this run works at (not checked when None).
        settings: this run's values of the settings the file may record (``{name: value}``).
        tolerance: relative difference of voxel sizes and settings still taken as equal.
        contrast: the polarity this run's network works in (not checked when None).

    Raises:
        ValueError: naming the weights, what they were trained for and what this run declares.
    """
    info = read_model_info(weights)
    if info is None:
        return
    path = model_info_path(weights)
    trained_classes, trained_voxel = info["class_names"], info["voxel_size"]
    if class_names is not None and trained_classes is not None and trained_classes != [str(c) for c in class_names]:
        raise ValueError(
            f"{weights} was trained for the classes {trained_classes} (output channels in this order, see {path}); this "
            f"manifest declares {list(class_names)}: declare the model's classes in its order, or train on this manifest"
        )
    if voxel_size is not None and trained_voxel is not None and not _close(float(voxel_size), trained_voxel, tolerance):
        raise ValueError(
            f"{weights} was trained at {trained_voxel:g} Å per voxel (see {path}) and this run works at {float(voxel_size):g} Å: "
            f"add --target_voxel_size {trained_voxel:g} to resample the tomograms to the model's voxel size"
        )
    if contrast is not None and info["contrast"] is not None and info["contrast"] != contrast:
        raise ValueError(
            f"{weights} works on {info['contrast']}-protein images (see {path}) and this run feeds it {contrast} ones: "
            f"leave network_contrast at its default, which follows the weights (each tomogram is inverted as the "
            f"manifest's \"contrast\" requires)"
        )
    for name, value in (settings or {}).items():
        trained = info["settings"].get(name)
        if trained is not None and not _close(float(value), trained, tolerance):
            raise ValueError(
                f"{weights} was trained with {name} {trained:g} (see {path}) and this run uses {float(value):g}: "
                f"add --{name} {trained:g}, or train with this value"
            )


def _close(value: float, trained: float, tolerance: float) -> bool:
    return abs(value - trained) <= tolerance * abs(trained)


class ModelInfoWriter:
    """Writes ``<folder>/model_info.json`` when training starts, so that every checkpoint and final model saved there
    is described.

    Args:
        folder: the checkpoint folder.
        class_names: classes in output-channel order (None: the weights are not tied to classes).
        voxel_size: Å per voxel the network works at (None: not tied to one).
        settings: config values the weights only fit when picking uses them too (``{name: value}``).
        contrast: the polarity the network works in (None: not tied to one).
        class_radii: particle radius (Å) of each class, in channel order (None: not recorded).
    """

    def __init__(
        self,
        folder,
        class_names: Sequence[str] | None,
        voxel_size: float | None,
        settings: Mapping[str, float] | None = None,
        contrast: str | None = DEFAULT_CONTRAST,
        class_radii: Sequence[float] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.class_names = None if class_names is None else list(class_names)
        self.voxel_size = None if voxel_size is None else float(voxel_size)
        self.settings = dict(settings or {})
        self.contrast = contrast
        self.class_radii = class_radii

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine=None) -> None:
        write_model_info(self.folder, self.class_names, self.voxel_size, self.settings, self.contrast, class_radii=self.class_radii)
