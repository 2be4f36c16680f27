"""The FROM and partial-face benchmark sets: named regions and occluder groups (regions), LFW-style
verification pairs (pairs), and PartialLFW-style partial faces (partial)."""
