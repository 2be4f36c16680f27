"""occgen: occluded face datasets for FROM-style training, built fast and reproducibly.

Data flow, one package per stage:
    align/   raw photos + 5 landmarks -> aligned 112x96 / 112x112 faces
    occlude/ aligned faces + occluder library -> Algorithm 1 -> WebDataset shards + Parquet manifest
    label/   manifest boxes -> occlusion-pattern labels for any K (pure, vectorized)
Shared below them: images.py (decode/encode), writer.py (atomic files, tars, Parquet), runner.py (processes),
errors.py; the command line sits above them in cli/.
"""

__version__ = "0.1.0"  # the one version source: setup.cfg and fromnet read it from here
