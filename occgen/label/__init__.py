"""Stage 3, manifest boxes -> occlusion-pattern labels for any K: the pattern catalog and IoU labelling (patterns),
and the labels file beside a manifest (labels)."""
