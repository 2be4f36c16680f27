"""fromnet: train and evaluate FROM (occlusion-robust face recognition) on occgen shards."""

__version__ = "0.1.0"
