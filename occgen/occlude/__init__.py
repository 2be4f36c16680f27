"""Stage 2, aligned faces -> occluded WebDataset shards: inputs (sources, demo), the occluder library (occluders,
coverage), each sample's key, seed and choices (plan), Algorithm 1 (render), and the shard runs (run)."""
