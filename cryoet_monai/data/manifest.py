"""Data manifests: which images, which picks, which classes, which splits (DESIGN.md §2).

Paths inside a manifest are relative to the manifest's folder. 3D positions and ``annotated``
boxes are in Å (``[x0, y0, z0, x1, y1, z1]``); 2D ones in pixels (``[x0, y0, x1, y1]``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cryoet_monai.data.picks import coord_columns, empty_picks, item_column, read_picks
from cryoet_monai.data.contrast import CONTRASTS, DEFAULT_CONTRAST

SPLITS = ("training", "unlabeled", "validation", "test")


class ManifestError(ValueError):
    """A manifest that cannot be used, with the file and the problem in the message."""


@dataclass(frozen=True)
class ParticleClass:
    """A particle species.

    Args:
        name: class name as it appears in picks files.
        radius: particle radius in Å (3D) or px (2D).
        weight: weight of the class in the score; 0 means not scored.
    """

    name: str
    radius: float
    weight: float = 1.0


@dataclass
class Item:
    """One tomogram or micrograph of a split.

    Args:
        id: the experiment / micrograph name used in picks tables.
        image: absolute path of the image.
        picks: absolute path of its picks file, or None.
        annotated: boxes (Å for 3D, px for 2D) where the annotation is complete; None means everywhere.
        voxel_size: Å per voxel (or pixel) of this image.
        voxel_size_declared: whether the manifest gives ``voxel_size`` (for the item or for all); otherwise it is the
            1 Å default, which micrograph picking (in pixels) does not need, but converting Å to pixels does.
        contrast: ``"dark"`` (protein darker than ice, as reconstructed or recorded) or ``"bright"`` (inverted).
    """

    id: str
    image: Path
    picks: Path | None = None
    annotated: list[list[float]] | None = None
    voxel_size: float = 1.0
    voxel_size_declared: bool = True
    contrast: str = DEFAULT_CONTRAST

    def as_dict(self) -> dict:
        """The item as a plain dict (what MONAI datasets and transforms consume)."""
        return {
            "id": self.id,
            "image": str(self.image),
            "picks": None if self.picks is None else str(self.picks),
            "annotated": self.annotated,
            "voxel_size": self.voxel_size,
            "contrast": self.contrast,
        }


@dataclass
class Manifest:
    """A loaded, validated manifest.

    Args:
        name: data set name.
        ndim: 3 for tomograms, 2 for micrographs.
        voxel_size: default Å per voxel (or pixel).
        classes: declared particle classes.
        contrast: default polarity of the images (``"dark"`` or ``"bright"``).
        splits: items of each split (``training``, ``unlabeled``, ``validation``, ``test``).
        path: the manifest file (None for one built in memory).
    """

    name: str
    ndim: int
    voxel_size: float
    classes: list[ParticleClass]
    splits: dict[str, list[Item]] = field(default_factory=dict)
    path: Path | None = None
    contrast: str = DEFAULT_CONTRAST

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def particle_class(self, name: str) -> ParticleClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise ManifestError(f"{self.path}: class '{name}' is not declared (declared: {self.class_names})")

    def items(self, split: str) -> list[Item]:
        """Items of a split (an unknown split name is an error, an absent one is empty)."""
        if split not in SPLITS:
            raise ManifestError(f"{self.path}: unknown split '{split}' (use one of {list(SPLITS)})")
        return self.splits.get(split, [])

    def item(self, item_id: str) -> Item:
        for items in self.splits.values():
            for it in items:
                if it.id == item_id:
                    return it
        raise ManifestError(f"{self.path}: no item with id '{item_id}'")

    def read_item_picks(self, item: Item) -> pd.DataFrame:
        """The picks of an item (it must have a picks file), STAR positions converted with its voxel size and shape."""
        return read_picks(item.picks, ndim=self.ndim, **picks_reader_args(item.picks, self.ndim, item.voxel_size, item.image, item.voxel_size_declared))

    def labeled_counts(self, split: str) -> list[int]:
        """Number of picks of each class (in ``class_names`` order) inside the annotated boxes of a split."""
        counts = dict.fromkeys(self.class_names, 0)
        for item in self.items(split):
            if item.picks is None:
                continue
            picks = self.read_item_picks(item)
            picks = picks[inside_boxes(picks[coord_columns(self.ndim)].to_numpy(), item.annotated)]
            for name, count in picks["particle_type"].value_counts().items():
                counts[name] += int(count)
        return list(counts.values())

    def run_voxel_size(self, tolerance: float = 0.01, remedy: str = "resample them to it, or give them a manifest of their own") -> float:
        """The one voxel size of a run whose config sizes things in voxels of the manifest's voxel size (CryoMAE's
        down-sampling and its picks, the teacher's pseudo-labels), once every tomogram is checked to have it.

        A tomogram at another voxel size (a binned one, a second data set) would be picked at the wrong scale and its
        picks placed with the wrong voxel size. Micrographs (2D) measure particles in pixels and are not checked.

        Args:
            tolerance: relative difference still taken as the same voxel size.
            remedy: what the error message tells the user to do.

        Raises:
            ManifestError: naming the items at another voxel size.
        """
        if self.ndim == 3:
            other = [f"'{it.id}' ({it.voxel_size:g} Å)" for items in self.splits.values() for it in items
                     if abs(it.voxel_size - self.voxel_size) > tolerance * self.voxel_size]
            if other:
                raise ManifestError(
                    f"{self.path}: item(s) {', '.join(other[:5])}{' ...' if len(other) > 5 else ''} are not at the manifest's "
                    f"{self.voxel_size:g} Å per voxel; a bundle run works at one voxel size: {remedy}"
                )
        return self.voxel_size

    def data_dicts(self, split: str) -> list[dict]:
        """Items of a split as dicts for a MONAI ``Dataset``."""
        return [it.as_dict() for it in self.items(split)]

    def truth(self, split: str) -> pd.DataFrame:
        """All annotated picks of a split as one picks table."""
        tables = [self.read_item_picks(it) for it in self.items(split) if it.picks is not None]
        tables = [t for t in tables if len(t)]
        return pd.concat(tables, ignore_index=True) if tables else empty_picks(self.ndim)

    def to_dict(self) -> dict:
        """The manifest as JSON-ready dict with paths relative to the manifest's folder."""
        root = self.path.parent if self.path is not None else Path.cwd()

        def rel(p):
            return None if p is None else _relative(Path(p), root)

        declared = all(it.voxel_size_declared for items in self.splits.values() for it in items)
        out = {"name": self.name, "ndim": self.ndim, **({"voxel_size": self.voxel_size} if declared else {})}
        out["contrast"] = self.contrast
        out["classes"] = [{"name": c.name, "radius": c.radius, "weight": c.weight} for c in self.classes]
        for split in SPLITS:
            if split not in self.splits:
                continue
            entries = []
            for it in self.splits[split]:
                entry = {"id": it.id, "image": rel(it.image)}
                if it.picks is not None:
                    entry["picks"] = rel(it.picks)
                if it.annotated is not None:
                    entry["annotated"] = [[round(float(v), 3) for v in box] for box in it.annotated]
                if it.voxel_size_declared and (not declared or it.voxel_size != self.voxel_size):
                    entry["voxel_size"] = it.voxel_size
                if it.contrast != self.contrast:
                    entry["contrast"] = it.contrast
                entries.append(entry)
            out[split] = entries
        return out

    def save(self, path) -> Path:
        """Write the manifest as JSON (atomically); paths are stored relative to its folder."""
        from cryoet_monai.data.atomic import atomic_path

        self.path = Path(path).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return self.path


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def picks_reader_args(picks, ndim: int, voxel_size: float, image, voxel_size_declared: bool = True) -> dict:
    """``read_picks`` arguments for the picks file of one image: a tomogram's STAR positions (pixels, or Å from
    the centre) are converted with its voxel size and shape, a micrograph's Å origin shifts with its pixel size;
    other files need none.

    Args:
        picks: the picks file.
        ndim: 3 for tomograms, 2 for micrographs.
        voxel_size: Å per voxel (pixel) of the image.
        image: the image file, whose header gives the shape.
        voxel_size_declared: False where ``voxel_size`` is only the manifest's 1 Å default: a micrograph's Å origin
            shifts are then converted with the STAR file's own pixel size or refused, never with 1 Å.
    """
    if Path(picks).suffix.lower() != ".star":
        return {}
    if ndim == 2:
        return {"voxel_size": voxel_size if voxel_size_declared else None}
    from cryoet_monai.data.readers import image_info

    return {"voxel_size": voxel_size, "shapes": tuple(image_info(image)[0])}


def inside_boxes(coords_xyz: np.ndarray, boxes: list[list[float]] | None) -> np.ndarray:
    """Boolean mask of points (``(N, ndim)``, x-y-z order) inside any of the ``annotated`` boxes.

    Args:
        coords_xyz: positions in the units of the boxes.
        boxes: ``[lo..., hi...]`` boxes; None means the whole item is annotated.
    """
    coords = np.asarray(coords_xyz, dtype=float)
    if boxes is None:
        return np.ones(len(coords), dtype=bool)
    keep = np.zeros(len(coords), dtype=bool)
    ndim = coords.shape[1] if coords.ndim == 2 else 0
    for box in boxes:
        lo, hi = np.asarray(box[:ndim]), np.asarray(box[ndim:])
        keep |= np.all((coords >= lo) & (coords <= hi), axis=1)
    return keep


def load_manifest(path, root=None, check_files: bool = True, check_points: bool = True, check_voxels: bool = False) -> Manifest:
    """Load and validate a manifest.

    Args:
        path: the JSON file.
        root: folder that relative paths refer to; defaults to the manifest's folder (the contract).
            Shipped manifests whose data lives elsewhere (e.g. real micrographs) take it at run time.
        check_files: fail when an image or picks file is missing.
        check_points: read each picks file and image header; fail on undeclared classes, non-finite picks and
            points outside their image.
        check_voxels: with ``check_points``, also read every voxel of every image and fail on NaN or infinite
            values (``cryoet-monai manifest check``; off by default: a run would read all of a split's data
            once more, and the image readers fail on such voxels anyway when a tomogram is loaded).

    Raises:
        ManifestError: naming the file and the problem.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: a manifest is a JSON object")
    root = Path(root).resolve() if root is not None else path.parent

    def fail(msg):
        raise ManifestError(f"{path}: {msg}")

    ndim = raw.get("ndim")
    if ndim not in (2, 3):
        fail(f"'ndim' must be 2 (micrographs) or 3 (tomograms), got {ndim!r}")
    voxel_size = raw.get("voxel_size", 1.0)
    if not isinstance(voxel_size, (int, float)) or not voxel_size > 0:
        fail(f"'voxel_size' must be a positive number of Å, got {voxel_size!r}")
    classes = []
    for i, c in enumerate(raw.get("classes") or []):
        if not isinstance(c, dict) or "name" not in c or "radius" not in c:
            fail(f"class #{i + 1} needs 'name' and 'radius', got {c!r}")
        if not isinstance(c["radius"], (int, float)) or c["radius"] <= 0:
            fail(f"class '{c['name']}' has radius {c['radius']!r}; it must be a positive number")
        classes.append(ParticleClass(str(c["name"]), float(c["radius"]), float(c.get("weight", 1.0))))
    if not classes:
        fail("no 'classes' declared")
    if len({c.name for c in classes}) != len(classes):
        fail("class names must be unique")
    contrast = _check_contrast(raw.get("contrast", DEFAULT_CONTRAST), fail)
    unknown = set(raw) - {"name", "ndim", "voxel_size", "contrast", "classes", "description", *SPLITS}
    if unknown:
        fail(f"unknown key(s) {sorted(unknown)}; splits are {list(SPLITS)}")

    manifest = Manifest(str(raw.get("name", path.stem)), ndim, float(voxel_size), classes, {}, path, contrast)
    seen = set()
    for split in SPLITS:
        if split not in raw:
            continue
        if not isinstance(raw[split], list):
            fail(f"'{split}' must be a list of items")
        items = []
        for k, entry in enumerate(raw[split]):
            where = f"{split}[{k}]"
            if not isinstance(entry, dict) or "id" not in entry or "image" not in entry:
                fail(f"{where} needs 'id' and 'image'")
            item_id = str(entry["id"])
            if (split, item_id) in seen:
                fail(f"{where}: id '{item_id}' appears twice in '{split}'")
            seen.add((split, item_id))
            image = (root / entry["image"]).resolve()
            picks = (root / entry["picks"]).resolve() if entry.get("picks") else None
            if check_files and not image.exists():
                fail(f"{where} ('{item_id}'): image not found: {image}")
            if check_files and picks is not None and not picks.is_file():
                fail(f"{where} ('{item_id}'): picks file not found: {picks}")
            boxes = entry.get("annotated")
            if boxes is not None:
                boxes = _check_boxes(boxes, ndim, lambda m, w=where, i=item_id: fail(f"{w} ('{i}'): {m}"))
            item_voxel = float(entry.get("voxel_size", voxel_size))
            item_contrast = _check_contrast(entry.get("contrast", contrast), lambda m, w=where, i=item_id: fail(f"{w} ('{i}'): {m}"))
            items.append(
                Item(item_id, image, picks, boxes, item_voxel, "voxel_size" in entry or "voxel_size" in raw, item_contrast)
            )
        manifest.splits[split] = items

    if check_points:
        for split in manifest.splits:
            for it in manifest.splits[split]:
                _check_item_points(manifest, it, check_voxels)
    return manifest


def voxel_size_mismatches(manifest: Manifest, tolerance: float = 0.01) -> list[str]:
    """Items whose image header gives a voxel size more than ``tolerance`` (relative) from the manifest's.

    Headers without a voxel size (1 Å, e.g. pictures) are not compared. A mismatch is often a binned tomogram
    under an unbinned manifest entry, which would scale every pick and every particle radius.
    """
    from cryoet_monai.data.readers import image_info

    found = []
    for split, items in manifest.splits.items():
        for item in items:
            if not item.image.exists():
                continue
            _, header = image_info(item.image)
            if header != 1.0 and abs(header - item.voxel_size) > tolerance * item.voxel_size:
                found.append(f"{manifest.path}: {split} item '{item.id}': voxel size {item.voxel_size:g} Å in the manifest, {header:g} Å in the header of {item.image}")
    return found


def _check_contrast(value, fail) -> str:
    if value not in CONTRASTS:
        fail(f"'contrast' must be one of {list(CONTRASTS)} (dark: protein darker than ice, as reconstructed), got {value!r}")
    return value


def _check_boxes(boxes, ndim, fail):
    if not isinstance(boxes, list):
        fail("'annotated' must be a list of boxes")
    out = []
    for b, box in enumerate(boxes):
        ok = isinstance(box, (list, tuple)) and len(box) == 2 * ndim
        ok = ok and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
        if not ok:
            fail(f"annotated box #{b + 1} must be {2 * ndim} finite numbers [lo xyz..., hi xyz...], got {box!r}")
        if any(box[d] >= box[ndim + d] for d in range(ndim)):
            fail(f"annotated box #{b + 1} has lo >= hi: {box!r}")
        out.append([float(v) for v in box])
    return out


def _check_item_points(manifest: Manifest, item: Item, check_voxels: bool = False) -> None:
    from cryoet_monai.data.readers import ImageFileError, check_finite_voxels, image_info

    where = f"{manifest.path}: item '{item.id}'"
    if not item.image.exists():
        return
    try:
        shape, _ = image_info(item.image)
    except Exception as err:  # a broken image is reported as the manifest's problem
        raise ManifestError(f"{where}: cannot read image {item.image}: {err}") from err
    if len(shape) != manifest.ndim:
        raise ManifestError(
            f"{where}: image {item.image} has {len(shape)} dimensions {tuple(shape)} but the manifest says ndim={manifest.ndim}"
        )
    if check_voxels:
        try:
            check_finite_voxels(item.image)
        except ImageFileError as err:
            raise ManifestError(f"{where}: {err}") from err
    if item.picks is None or not item.picks.is_file():
        return
    try:
        picks = manifest.read_item_picks(item)
    except ValueError as err:
        raise ManifestError(f"{where}: {err}") from err
    undeclared = sorted(set(picks["particle_type"]) - set(manifest.class_names))
    if undeclared:
        raise ManifestError(
            f"{where}: {item.picks} has class(es) {undeclared} not declared in the manifest ({manifest.class_names})"
        )
    ids = set(picks[item_column(manifest.ndim)])
    if ids - {item.id}:
        raise ManifestError(f"{where}: {item.picks} holds picks for {sorted(ids - {item.id})}, not only '{item.id}'")
    unit = item.voxel_size if manifest.ndim == 3 else 1.0
    coords = picks[coord_columns(manifest.ndim)].to_numpy() / unit
    extent_xyz = np.asarray(shape[::-1], dtype=float)
    outside = np.any((coords < -0.5) | (coords > extent_xyz - 0.5), axis=1)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        units = "Å" if manifest.ndim == 3 else "px"
        raise ManifestError(
            f"{where}: {int(outside.sum())} pick(s) in {item.picks} lie outside the image "
            f"(first: row {row + 1} at {picks[coord_columns(manifest.ndim)].iloc[row].tolist()} {units}; "
            f"image is {tuple(int(s) for s in shape[::-1])} voxels x-y-z at {unit} {units}/voxel)"
        )
