"""Seeing into a built dataset: statistics and plots (stats), contact sheets (preview), the dataset card (card),
and what an occluder library will do (library)."""
