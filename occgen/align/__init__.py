"""Stage 1, raw photos -> aligned faces: templates and similarity fit (transform), landmark files (landmarks),
MTCNN (detect), and resumable align runs (run)."""
