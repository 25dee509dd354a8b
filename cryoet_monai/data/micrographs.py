"""A 2D manifest from what a single-particle user has: a set of micrographs and a picks file of a few exemplars.

The micrographs named in the exemplar file become ``training`` items (the one with the most exemplars first:
CryoMAE pre-trains on the first training item), every other micrograph a ``test`` item to be picked. The
exemplars of each training micrograph are written as ``picks/<id>.csv`` beside the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryoet_monai.data.manifest import Item, Manifest, ManifestError, ParticleClass, load_manifest
from cryoet_monai.data.picks import PicksError, read_picks, write_picks
from cryoet_monai.data.readers import MRC_SUFFIXES, PICTURE_SUFFIXES, image_info

MICROGRAPH_SUFFIXES = MRC_SUFFIXES + PICTURE_SUFFIXES


def manifest_from_micrographs(
    micrographs: Sequence,
    exemplars,
    diameter_px: float,
    out,
    particle: str | None = None,
    exemplars_micrograph: str | None = None,
    pixel_size: float | None = None,
    name: str = "micrographs",
    contrast: str = "dark",
) -> Path:
    """Write a 2D manifest for few-shot picking of ``micrographs`` from the exemplars in one picks file.

    Args:
        micrographs: image files (MRC or 8-bit TIFF/PNG/JPEG), or folders of them; a file's name without its suffix
            is the micrograph id that picks files use.
        exemplars: picks file of the hand-picked particles (CSV or RELION STAR, pixels; a STAR file's origin shifts
            are applied).
        diameter_px: particle diameter in pixels of the micrographs.
        out: path of the manifest to write.
        particle: class name of the particles; default the exemplar file's one class name (a STAR file without
            class names, or a CSV file without ``particle_type``, needs it).
        exemplars_micrograph: id of the micrograph the exemplars lie in, for a STAR file without
            ``rlnMicrographName`` (RELION's per-micrograph manual-pick files) or a CSV file without ``micrograph``.
        pixel_size: Å per pixel; default the MRC micrographs' headers, else none is written (picking works in
            pixels; Å origin shifts of a STAR file then need the file's own ``rlnMicrographPixelSize``).
        name: data set name.
        contrast: polarity of the micrographs: ``dark`` (protein darker than the ice, as recorded) or ``bright``
            (inverted).

    Raises:
        ManifestError: naming the file and the problem (no micrographs, an unreadable or non-2D image, two files
            with one id, MRC micrographs of different pixel sizes, exemplars of several classes or of a micrograph not
            given, fewer than 2 exemplars, exemplars outside their micrograph).
    """
    out = Path(out).resolve()
    if not diameter_px > 0:
        raise ManifestError(f"{out}: the particle diameter must be a positive number of pixels, got {diameter_px!r}")
    images = _micrographs_by_id(micrographs, out)
    header_pixel_size = _header_pixel_size(images.values())
    known_pixel_size = pixel_size if pixel_size is not None else header_pixel_size
    reader_args = {"experiment": exemplars_micrograph, "particle_type": particle}
    if Path(exemplars).suffix.lower() == ".star":
        reader_args["voxel_size"] = known_pixel_size
    try:
        table = read_picks(exemplars, ndim=2, **reader_args)
    except PicksError as err:  # a file without the column: say which option supplies it
        missing = {
            "rlnMicrographName": "name their micrograph (--exemplars-micrograph ID)",
            "'micrograph'": "name their micrograph (--exemplars-micrograph ID)",
            "rlnClassNumber": "name their class (--particle NAME)",
            "'particle_type'": "name their class (--particle NAME)",
            "origin shifts": "give the micrographs' pixel size (--pixel-size Å)",
        }
        hint = next((h for column, h in missing.items() if column in str(err)), None)
        if hint is None:
            raise
        raise ManifestError(f"{err}; {hint}") from err
    if particle is not None:
        table["particle_type"] = particle
    classes = sorted(set(table["particle_type"]))
    if len(classes) != 1:
        raise ManifestError(f"{exemplars}: exemplars of {len(classes)} classes {classes}; CryoMAE picks one class per run: give the exemplars of one")
    if len(table) < 2:
        raise ManifestError(f"{exemplars}: {len(table)} exemplar(s); exemplar matching needs at least 2")
    counts = table["micrograph"].value_counts()
    order = sorted(counts.index, key=lambda micrograph: (-counts[micrograph], micrograph))  # most exemplars first
    unknown = sorted(set(order) - set(images))
    if unknown:
        raise ManifestError(f"{exemplars}: exemplars in micrograph(s) {unknown[:5]} that are not among the micrographs given ({len(images)} files)")

    pixel_size, declared = (known_pixel_size, True) if known_pixel_size is not None else (1.0, False)  # no 1 Å guess in the file
    written = []
    try:
        training = []
        for micrograph in order:
            destination = out.parent / "picks" / f"{micrograph}.csv"
            if destination == Path(exemplars).resolve():
                raise ManifestError(f"{exemplars}: the manifest would overwrite it with picks/{micrograph}.csv; write the manifest to another folder")
            written.append(write_picks(table[table["micrograph"] == micrograph], destination))
            training.append(Item(micrograph, images[micrograph], written[-1], voxel_size=float(pixel_size), voxel_size_declared=declared, contrast=contrast))
        test = [Item(micrograph, path, voxel_size=float(pixel_size), voxel_size_declared=declared, contrast=contrast) for micrograph, path in images.items() if micrograph not in order]
        manifest = Manifest(name, 2, float(pixel_size), [ParticleClass(classes[0], diameter_px / 2.0)], {"training": training, "test": test}, contrast=contrast)
        written.append(manifest.save(out))
        load_manifest(out)  # the manifest's own checks: non-2D images, exemplars outside their micrograph
    except ManifestError:
        for file in written:  # nothing half-made is left to be mistaken for a usable manifest
            Path(file).unlink(missing_ok=True)
        raise
    return out


def _header_pixel_size(images, tolerance: float = 0.01) -> float | None:
    """The pixel size in the MRC micrographs' headers (None where none gives one: pictures, or 1 Å, a header's
    blank); one diameter in pixels fits the particles of all micrographs only when they share it."""
    sizes = {path: image_info(path)[1] for path in images if path.suffix.lower() in MRC_SUFFIXES}
    sizes = {path: size for path, size in sizes.items() if size != 1.0}
    if not sizes:
        return None
    first, size = next(iter(sizes.items()))
    for path, other in sizes.items():
        if abs(other - size) > tolerance * size:
            raise ManifestError(
                f"{path} has {other:g} Å per pixel, {first} {size:g} Å: one particle diameter in pixels fits only "
                "micrographs of one pixel size; make a manifest for each pixel size"
            )
    return size


def _micrographs_by_id(micrographs: Sequence, out: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    files = []
    for given in map(lambda p: Path(p).resolve(), micrographs):  # a folder stands for its micrographs (no shell limit)
        files += sorted(f for f in given.iterdir() if f.suffix.lower() in MICROGRAPH_SUFFIXES) if given.is_dir() else [given]
    for file in files:
        if not file.is_file():
            raise ManifestError(f"{file}: micrograph not found")
        if file.suffix.lower() not in MICROGRAPH_SUFFIXES:
            raise ManifestError(f"{file}: not a micrograph format ({', '.join(MICROGRAPH_SUFFIXES)})")
        if file.stem in images:
            raise ManifestError(f"{file} and {images[file.stem]} have the same id '{file.stem}'; micrograph ids must be unique")
        images[file.stem] = file
    if not images:
        raise ManifestError(f"{out}: no micrographs given")
    return images
