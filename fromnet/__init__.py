"""fromnet: train and evaluate FROM (occlusion-robust face recognition) on occgen shards.

The library: models/ (the networks), losses.py, shards.py (reading occgen datasets), checkpoint.py, embed.py,
export.py, occlusion.py, eval/ (scoring pairs and galleries). The training program that `fromnet train` runs
lives in train/ and is not imported by the library.
"""

from occgen import __version__  # one version for the distribution, kept in occgen/__init__.py

__all__ = ["__version__"]
