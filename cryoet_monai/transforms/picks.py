"""Load an item's picks file into voxel points and class labels for the transforms that follow."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from cryoet_monai.data.manifest import inside_boxes, picks_reader_args
from cryoet_monai.data.picks import read_picks


class LoadPicksd(MapTransform):
    """Read the picks of one tomogram as voxel ``(z, y, x)`` points and class indices.

    The file named by ``d[key]`` (a path, or None for an item without picks) is read with
    :func:`~cryoet_monai.data.picks.read_picks`; rows of other experiments than ``d["id"]`` and
    picks outside the item's ``annotated`` boxes (``d["annotated"]``; there the labels are not known,
    as for a lab that annotated only inside the boxes) are dropped; Å positions become voxel coordinates with ``d["voxel_size"]`` (or the loaded image's
    ``meta["voxel_size"]``). A STAR file's positions are converted with the voxel size and the shape of the image
    file (``d["image"]``, or the loaded image's ``filename_or_obj``; ``d["original_voxel_size"]`` when the tomogram
    was resampled, see :class:`~cryoet_monai.transforms.voxel_size.ResampleToVoxelSized`). Writes
    ``d[points_key]`` float32 ``(N, 3)`` and ``d[labels_key]`` int64 ``(N,)``, the index of each pick's class
    in ``classes``.

    Args:
        keys: the key holding the picks file path (exactly one).
        classes: class names in channel order; a pick of any other class is an error.
        points_key: output key of the points.
        labels_key: output key of the labels.
        allow_missing_keys: don't raise an exception if the key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "picks",
        classes: Sequence[str] | None = None,
        points_key: Hashable = "points",
        labels_key: Hashable = "labels",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"LoadPicksd reads exactly one picks key, got {self.keys}")
        if not classes:
            raise ValueError("LoadPicksd needs the class names ('classes') in channel order")
        self.classes = [str(c) for c in classes]
        self.points_key, self.labels_key = points_key, labels_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            points = np.zeros((0, 3), dtype=np.float32)
            labels = np.zeros((0,), dtype=np.int64)
            if path is not None:
                voxel_size = data_voxel_size(d, source=str(path))
                file_voxel_size = float(d.get("original_voxel_size", voxel_size))  # a resampled tomogram's file
                picks = read_picks(path, ndim=3, **picks_reader_args(path, 3, file_voxel_size, _image_file(d)))
                if "id" in d:
                    picks = picks[picks["experiment"] == str(d["id"])]
                unknown = sorted(set(picks["particle_type"]) - set(self.classes))
                if unknown:
                    raise ValueError(f"{path}: class(es) {unknown} are not among the declared classes {self.classes}")
                picks = picks[inside_boxes(picks[["x", "y", "z"]].to_numpy(), d.get("annotated"))]
                points = (picks[["z", "y", "x"]].to_numpy(dtype=np.float64) / voxel_size).astype(np.float32)
                labels = np.asarray([self.classes.index(c) for c in picks["particle_type"]], dtype=np.int64)
            d[self.points_key] = points
            d[self.labels_key] = labels
        return d


def _image_file(d: Mapping, image_key: Hashable = "image"):
    """The image file of a data dict: ``d[image_key]`` before loading, the loaded image's ``filename_or_obj`` after."""
    image = d.get(image_key)
    return image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else image


def data_voxel_size(d: Mapping, image_key: Hashable = "image", source: str = "data") -> float:
    """The voxel size (Å) of a data dict: ``d["voxel_size"]``, else the image's ``meta["voxel_size"]``.

    Args:
        d: the data dict.
        image_key: key of the loaded image whose metadata is the fallback.
        source: what to name in the error message (e.g. the picks file).
    """
    image = d.get(image_key)
    if d.get("voxel_size") is not None:
        value = float(np.asarray(d["voxel_size"]).reshape(-1)[0])
    elif isinstance(image, MetaTensor) and "voxel_size" in image.meta:
        value = float(np.asarray(image.meta["voxel_size"]).reshape(-1)[0])
    else:
        raise KeyError(f"{source}: no voxel size ('voxel_size' neither in the data nor in the meta of '{image_key}')")
    if not value > 0:
        raise ValueError(f"{source}: voxel size must be positive, got {value}")
    return value
