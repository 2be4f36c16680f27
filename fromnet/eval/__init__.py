"""Evaluation of face embeddings: metrics (pure), pairs and embeddings files, verification, identification, reports."""
