"""Few-shot and semi-supervised particle picking for cryo-ET and cryo-EM, shipped as MONAI bundles."""

__version__ = "0.1.0"
