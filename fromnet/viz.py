"""Pictures of what a model looks at: the attention variant's K maps drawn on the face they came from."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def _array(x) -> np.ndarray:
    """A float32 numpy copy of an array or a (possibly CUDA, grad-carrying) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def heat_colors(t: np.ndarray) -> np.ndarray:
    """The 'hot' ramp (black, red, yellow, white) for values in [0, 1]: (...,) -> (..., 3) floats in [0, 1]."""
    t = np.clip(t, 0.0, 1.0)[..., None]
    return np.clip(3.0 * t - np.array([0.0, 1.0, 2.0]), 0.0, 1.0)


def attention_overlay(face_uint8_hwc: np.ndarray, attention_maps, importance, alpha: float = 0.6) -> np.ndarray:
    """The face, then one panel per attention map, side by side: (H, (K + 1) * W, 3) uint8.

    `attention_maps` are one face's raw maps A (K, h, w) (AttentionOutput.attention[i]), `importance` its s (K,)
    (AttentionOutput.importance[i]); numpy arrays or torch tensors. Each map is scaled by its own maximum (A >= 0,
    so 0 stays "no response"), upsampled bilinearly to the face and blended in as a heat colour where it responds;
    each panel is labelled with its map index and s_k.
    """
    face = np.asarray(face_uint8_hwc)
    if face.dtype != np.uint8 or face.ndim != 3 or face.shape[2] != 3:
        raise ValueError(f"face must be an (H, W, 3) uint8 RGB array, got {face.dtype} {face.shape}")
    maps, weights = _array(attention_maps), _array(importance).reshape(-1)
    if maps.ndim != 3 or maps.shape[0] != weights.shape[0]:
        raise ValueError(
            f"attention_maps must be (K, h, w) with one importance per map; got maps {maps.shape}, "
            f"importance {weights.shape}"
        )
    h, w = face.shape[:2]
    base = face.astype(np.float32) / 255.0
    panels = [face]
    for k, (amap, s_k) in enumerate(zip(maps, weights)):
        peak = float(amap.max())
        scaled = np.clip(amap / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(amap)
        t = np.asarray(Image.fromarray(scaled).resize((w, h), Image.Resampling.BILINEAR))[..., None]
        blended = base * (1.0 - alpha * t) + heat_colors(t[..., 0]) * alpha * t
        panel = Image.fromarray(np.round(blended * 255.0).astype(np.uint8))
        ImageDraw.Draw(panel).text((2, 1), f"{k}: s={s_k:.2f}", fill=(255, 255, 255))
        panels.append(np.asarray(panel))
    return np.concatenate(panels, axis=1)
