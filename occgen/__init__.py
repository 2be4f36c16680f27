"""occgen: occluded face datasets for FROM-style training, built fast and reproducibly.

Data flow, one module per stage:
    align.py     raw photos + 5 landmarks -> aligned 112x96 / 112x112 faces
    sources.py   folder tree / list file / named source / demo -> identity-labelled inputs
    occluders.py occluder library (PDSN layout) with calibrated sizes
    render.py    Algorithm 1: paste one occluder onto one face (pure)
    plan.py      per-sample keys, seeds and random choices (pure)
    writer.py    WebDataset tar + Parquet manifest part per shard (atomic)
    build.py     shards -> worker processes, resume, summary
    patterns.py  occlusion-pattern catalog and IoU labelling for any K (pure)
"""

__version__ = "0.1.0"
