"""Loading trained weights into a bundle's network with an error that says which file does not fit and why."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
from monai.handlers import CheckpointLoader

from cryoet_monai.handlers.model_info import check_model_info, read_model_info

logger = logging.getLogger(__name__)

MISMATCH_HINT = (
    "a model only fits a network built for the classes and network settings it was trained with (one output channel "
    "per class): train on this manifest first, or choose a model trained with the same classes ({option})"
)


def weights_mismatch(path, err: RuntimeError, option: str = "--model_path", hint: str | None = None) -> ValueError | None:
    """The error to raise instead of ``load_state_dict``'s when the weights in ``path`` do not fit; None for other errors.

    Args:
        path: the checkpoint file.
        err: the error ``load_state_dict`` raised.
        option: the config setting that chooses the file, named in the hint.
        hint: what to do about it, instead of the hint for a model trained on other classes.
    """
    message = str(err)
    if "Error(s) in loading state_dict" not in message:
        return None
    details = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    first = details[0] if details else message
    return ValueError(f"{path}: the weights do not fit the network this config builds ({first}); {hint or MISMATCH_HINT.format(option=option)}")


def load_weights(
    network: torch.nn.Module,
    path,
    map_location=None,
    option: str = "--pretrained",
    class_names: Sequence[str] | None = None,
    voxel_size: float | None = None,
    settings: Mapping[str, float] | None = None,
    contrast: str | None = None,
    head: str | None = None,
    class_radii: Sequence[float] | None = None,
) -> torch.nn.Module:
    """``network.load_state_dict(torch.load(path))`` for a plain state dict, failing with the file named when it does not fit.

    Args:
        network: the network to fill.
        path: a state dict saved with ``torch.save`` (a bundle's ``models/model.pt``).
        map_location: passed to ``torch.load``.
        option: the config setting that chooses the file, named in the error.
        class_names: this run's classes in channel order, checked against the ``model_info.json`` beside the file.
        voxel_size: this run's Å per voxel, checked likewise (see :func:`~cryoet_monai.handlers.model_info.check_model_info`).
        settings: this run's values of the settings ``model_info.json`` may record, checked likewise.
        contrast: the polarity this run's network works in, checked likewise.
        head: name of the network's output head (e.g. ``output_block``). When the weights were trained for other
            classes (their ``model_info.json`` says so, or the head's shapes differ), every other tensor is loaded
            and the head keeps its fresh initialisation: fine-tuning a trained backbone to this run's classes.
            None refuses weights of other classes.
        class_radii: particle radius (Å) of each of this run's classes. With a fresh head and weights whose
            ``model_info.json`` records ``class_radii``, each class's output channel starts as a copy of the trained
            channel of the nearest radius (a detector of particles of its size) instead of afresh.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    fresh_head = head is not None and _other_classes(network, state, path, head, class_names)
    check_model_info(path, None if fresh_head else class_names, voxel_size, settings, contrast=contrast)
    trained_head = {k: v for k, v in state.items() if k.startswith(f"{head}.")} if fresh_head else {}
    state = {k: v for k, v in state.items() if k not in trained_head}
    try:
        missing, unexpected = network.load_state_dict(state, strict=not fresh_head)
    except RuntimeError as err:
        mismatch = weights_mismatch(path, err, option)
        if mismatch is None:
            raise
        raise mismatch from err
    if fresh_head:
        head_keys = sorted(k for k in network.state_dict() if k.startswith(f"{head}."))
        if sorted(missing) != head_keys or unexpected:
            raise ValueError(f"{path}: only the output head '{head}' may differ from this network, but {sorted(set(missing) - set(head_keys)) + sorted(unexpected)} do")
        info = read_model_info(path) or {}
        trained_radii = info.get("class_radii")
        if class_radii is not None and trained_radii:
            nearest = _size_matched_head(network, trained_head, head, class_radii, trained_radii)
            trained_names = info["class_names"] or [str(j) for j in range(len(trained_radii))]
            matched = ", ".join(f"{name} ← {trained_names[j]} ({trained_radii[j]:g} Å)" for name, j in zip(class_names or range(len(nearest)), nearest))
            logger.info(f"{path}: backbone loaded; each output channel of '{head}' starts from the trained channel of the nearest radius: {matched}")
        else:
            logger.info(f"{path}: backbone loaded; the output head '{head}' starts afresh for {list(class_names or [])}")
    return network


def _size_matched_head(network: torch.nn.Module, trained_head: Mapping[str, torch.Tensor], head: str, radii: Sequence[float], trained_radii: Sequence[float]) -> list[int]:
    """Copy into each output channel of ``network``'s head the trained channel whose radius is nearest (on a log
    scale) to its class's; channels before the classes (a segmentation's background) copy the trained ones. Returns
    the trained class index chosen for each class."""
    nearest = [min(range(len(trained_radii)), key=lambda j: abs(math.log(r / trained_radii[j]))) for r in radii]
    own = network.state_dict()
    with torch.no_grad():
        for key, trained in trained_head.items():
            target = own[key]
            leading = target.shape[0] - len(radii)
            if leading < 0 or trained.shape[0] - len(trained_radii) != leading or trained.shape[1:] != target.shape[1:]:
                raise ValueError(f"'{key}': {tuple(trained.shape)} trained for {len(trained_radii)} classes does not map onto {tuple(target.shape)} for {len(radii)}")
            target.copy_(trained[list(range(leading)) + [leading + j for j in nearest]])
    return nearest


def _other_classes(network: torch.nn.Module, state: Mapping[str, torch.Tensor], path, head: str, class_names) -> bool:
    """Whether the weights ``state`` (from ``path``) were trained for other classes than ``class_names`` (by the
    model_info.json beside ``path``, else by the shapes of the head's tensors)."""
    info = read_model_info(path)
    if info is not None and info["class_names"] is not None and class_names is not None:
        return info["class_names"] != [str(c) for c in class_names]
    own = network.state_dict()
    return any(k in state and state[k].shape != v.shape for k, v in own.items() if k.startswith(f"{head}."))


class ModelLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` whose error names the checkpoint and the likely cause when its weights do not fit.

    A bundle's shipped model has one output channel per class of the data it was trained on; picking a manifest with
    other classes with it failed with PyTorch's bare size-mismatch list.

    Args:
        args: as ``monai.handlers.CheckpointLoader``.
        hint: what the error tells the user to do (default: train on this manifest, or choose another ``--model_path``).
        class_names: this run's classes in channel order, checked against the ``model_info.json`` beside the file.
        voxel_size: this run's Å per voxel, checked likewise (see :func:`~cryoet_monai.handlers.model_info.check_model_info`).
        settings: this run's values of the settings ``model_info.json`` may record, checked likewise.
        contrast: the polarity this run's network works in, checked likewise.
        kwargs: as ``monai.handlers.CheckpointLoader``.
    """

    def __init__(
        self,
        *args,
        hint: str | None = None,
        class_names: Sequence[str] | None = None,
        voxel_size: float | None = None,
        settings: Mapping[str, float] | None = None,
        contrast: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.hint = hint
        self.class_names = class_names
        self.voxel_size = voxel_size
        self.settings = settings
        self.contrast = contrast

    def __call__(self, engine) -> None:
        check_model_info(self.load_path, self.class_names, self.voxel_size, self.settings, contrast=self.contrast)
        try:
            super().__call__(engine)
        except RuntimeError as err:
            mismatch = weights_mismatch(self.load_path, err, hint=self.hint)
            if mismatch is None:
                raise
            raise mismatch from err
