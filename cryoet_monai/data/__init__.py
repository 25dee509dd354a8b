"""Readers, picks tables, manifests and synthetic data."""

from cryoet_monai.data.crop_ratios import crop_class_ratios
from cryoet_monai.data.manifest import Item, Manifest, ManifestError, ParticleClass, load_manifest
from cryoet_monai.data.picks import PicksError, empty_picks, make_picks, read_picks, validate_picks, write_picks
from cryoet_monai.data.readers import ImageFileError, MRCReader, image_info, read_image, write_mrc
