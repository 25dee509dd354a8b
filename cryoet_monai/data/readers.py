"""Image readers: an MRC :class:`~monai.data.ImageReader` for ``LoadImage`` and plain helpers.

Arrays are always indexed ``[z, y, x]`` (MRC order) for tomograms and ``[y, x]`` for micrographs.
In a bundle, ``LoadImaged(keys="image", reader="cryoet_monai.data.readers.MRCReader")`` reads an
MRC file into a MetaTensor whose metadata carries ``voxel_size`` (Å) from the header.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.data.image_reader import ImageReader, _copy_compatible_dict, _stack_images
from monai.utils import MetaKeys, SpaceKeys

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PICTURE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
SLAB_BYTES = 64 * 2**20  # check_finite_voxels reads about this much at a time


class ImageFileError(ValueError):
    """An image that cannot be used, with the file and the problem in the message."""


def _suffix(path) -> str:
    name = str(path).lower().rstrip("/")
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _count_non_finite(array: np.ndarray) -> int:
    return int(np.size(array) - np.count_nonzero(np.isfinite(array)))


def _check_finite(array: np.ndarray, path) -> np.ndarray:
    bad = _count_non_finite(array)
    if bad:
        raise ImageFileError(f"{path}: {bad} voxel(s) are NaN or infinite")
    return array


def _count_non_finite_slabs(array) -> int:
    """Non-finite voxels of an array-like (memory map, zarr array, NIfTI proxy), read slab by slab along axis 0."""
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "fc":  # integer voxels are always finite
        return 0
    step = max(1, SLAB_BYTES // max(1, int(np.prod(array.shape[1:])) * dtype.itemsize))
    return sum(_count_non_finite(np.asarray(array[i : i + step])) for i in range(0, array.shape[0], step))


def read_mrc(path, header_only: bool = False):
    """Read an MRC file.

    Args:
        path: the file.
        header_only: return ``(shape, voxel_size)`` without reading the data.

    Returns:
        ``(array, voxel_size)`` with the array as float32 ``[z, y, x]`` (``[y, x]`` for a single section),
        or ``(shape, voxel_size)`` when ``header_only``.

    Raises:
        ImageFileError: missing, truncated or malformed file, or non-finite values.
    """
    import mrcfile

    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: image not found")
    try:
        with mrcfile.open(path, mode="r", permissive=False, header_only=header_only) as mrc:
            voxel_size = float(mrc.voxel_size.x)
            if header_only:
                h = mrc.header
                shape = tuple(int(v) for v in (h.nz, h.ny, h.nx))
                expected = int(np.prod(shape)) * mrcfile.utils.data_dtype_from_header(h).itemsize
                available = path.stat().st_size - 1024 - int(h.nsymbt)
                if available < expected:
                    raise ImageFileError(
                        f"{path}: truncated MRC: header promises {expected} bytes of data, file holds {available}"
                    )
                return (shape[1:] if shape[0] == 1 else shape), voxel_size
            data = np.array(mrc.data, dtype=np.float32)
    except ImageFileError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise ImageFileError(f"{path}: not a readable MRC file ({err})") from err
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    return _check_finite(data, path), voxel_size


def image_info(path) -> tuple[tuple[int, ...], float]:
    """Shape (``[z, y, x]`` or ``[y, x]``) and voxel size (Å; 1.0 when the file has none) without reading data."""
    suffix = _suffix(path)
    if suffix in MRC_SUFFIXES:
        return read_mrc(path, header_only=True)
    if suffix == ".zarr":
        from cryoet_monai.data.ome_zarr import ome_zarr_info

        return ome_zarr_info(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        img = nib.load(str(path))
        return tuple(int(s) for s in img.shape[::-1]), float(img.header.get_zooms()[0])
    if suffix in PICTURE_SUFFIXES:
        from PIL import Image

        with Image.open(path) as im:
            return (im.height, im.width), 1.0
    raise ImageFileError(f"{path}: unsupported image format '{suffix}'")


def check_finite_voxels(path) -> None:
    """Fail when an image holds NaN or infinite voxels or cannot be decoded, without reading a volume into memory whole.

    Args:
        path: MRC (memory-mapped), OME-Zarr (full resolution), NIfTI or TIFF/PNG/JPEG image.

    Raises:
        ImageFileError: naming the file and how many voxels are not finite, or a file that cannot be read.
    """
    suffix = _suffix(path)
    if suffix in MRC_SUFFIXES:
        import mrcfile

        try:
            with mrcfile.mmap(path, mode="r", permissive=False) as mrc:
                bad = _count_non_finite_slabs(mrc.data)
        except (ValueError, OSError, EOFError) as err:
            raise ImageFileError(f"{path}: not a readable MRC file ({err})") from err
    elif suffix == ".zarr":
        from cryoet_monai.data.ome_zarr import _open_level

        bad = _count_non_finite_slabs(_open_level(Path(path), 0)[0])
    elif suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        bad = _count_non_finite_slabs(nib.load(str(path)).dataobj)
    elif suffix in PICTURE_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as im:  # decoded whole: a cut-off file fails here; only 32-bit float pictures can hold NaN
                im.load()
                bad = _count_non_finite(np.asarray(im)) if im.mode == "F" else 0
        except OSError as err:
            raise ImageFileError(f"{path}: not a readable picture ({err})") from err
    else:
        raise ImageFileError(f"{path}: unsupported image format '{suffix}'")
    if bad:
        raise ImageFileError(f"{path}: {bad} voxel(s) are NaN or infinite")


def read_image(path, **kwargs) -> tuple[np.ndarray, float]:
    """Read any supported image as a float32 array (``[z, y, x]`` or ``[y, x]``) and its voxel size in Å.

    Args:
        path: MRC, OME-Zarr, NIfTI, TIFF/PNG/JPEG.
        kwargs: passed to the OME-Zarr reader (e.g. ``level``).
    """
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"{path}: image not found")
    suffix = _suffix(path)
    if suffix in MRC_SUFFIXES:
        return read_mrc(path)
    if suffix == ".zarr":
        from cryoet_monai.data.ome_zarr import read_ome_zarr

        return read_ome_zarr(path, **kwargs)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32)).transpose()  # NIfTI is x-y-z
        return _check_finite(data, path), float(img.header.get_zooms()[0])
    if suffix in PICTURE_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as im:
                data = np.asarray(im.convert("F") if im.mode not in ("F", "I;16") else im, dtype=np.float32)
        except OSError as err:
            raise ImageFileError(f"{path}: not a readable picture ({err})") from err
        return _check_finite(data, path), 1.0
    raise ImageFileError(f"{path}: unsupported image format '{suffix}'")


def write_mrc(path, array: np.ndarray, voxel_size: float) -> Path:
    """Write a float32 MRC (``[z, y, x]`` or ``[y, x]``) with its voxel size, atomically."""
    import mrcfile

    from cryoet_monai.data.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(array, dtype=np.float32))
            mrc.voxel_size = float(voxel_size)
    return path


class MRCReader(ImageReader):
    """MONAI image reader for MRC files (``.mrc .rec .map .mrcs .st .ali``).

    Loads ``[z, y, x]`` float32 arrays and puts the header voxel size (Å) into the metadata as
    ``voxel_size`` and into the affine, so ``LoadImage(reader=MRCReader)`` and
    ``LoadImaged(keys="image", reader="cryoet_monai.data.readers.MRCReader")`` work in bundles.

    Args:
        channel_dim: the channel axis of the file, if any (None for tomograms).
    """

    def __init__(self, channel_dim: int | None = None):
        super().__init__()
        self.channel_dim = channel_dim

    def verify_suffix(self, filename) -> bool:
        names = filename if isinstance(filename, (list, tuple)) else [filename]
        return all(_suffix(n) in MRC_SUFFIXES for n in names)

    def read(self, data, **kwargs):
        """The file names; their data are read by :meth:`get_data`.

        ``LoadImage`` tries its other readers when ``read`` fails, and the last one's error would hide why an
        MRC file is unusable (NaN voxels, truncation); reading in ``get_data`` lets that error reach the user.

        Raises:
            ImageFileError: a file without an MRC suffix (so that ``LoadImage`` tries its other readers).
        """
        names = list(data) if isinstance(data, (list, tuple)) else [data]
        if not self.verify_suffix(names):
            raise ImageFileError(f"{names}: not MRC files (suffixes {', '.join(MRC_SUFFIXES)})")
        return names

    def get_data(self, img):
        arrays, meta = [], {}
        for filename in map(str, img):
            array, voxel_size = read_mrc(filename)
            header = {
                "voxel_size": voxel_size,
                MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: self.channel_dim if self.channel_dim is not None else float("nan"),
                MetaKeys.AFFINE: np.diag([voxel_size] * array.ndim + [1.0]),
                MetaKeys.ORIGINAL_AFFINE: np.diag([voxel_size] * array.ndim + [1.0]),
                "filename_or_obj": filename,
            }
            arrays.append(array)
            _copy_compatible_dict(header, meta)
        return _stack_images(arrays, meta), meta
