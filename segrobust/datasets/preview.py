"""``preview_grid``: look at a data set (images, colourised masks, depth) in one picture."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from segrobust.datasets.functional import CAMVID_COLORS, IGNORE_INDEX, colorize

__all__ = ["depth_to_rgb", "preview_grid"]


def depth_to_rgb(depth: torch.Tensor, max_depth: float = 100.0) -> np.ndarray:
    """Log-scaled depth ``(1, H, W)`` or ``(H, W)`` as a uint8 ``(H, W, 3)`` image, near = bright.

    Examples:
        >>> depth_to_rgb(torch.tensor([[1.0, 100.0]])).tolist()
        [[[255, 255, 255], [0, 0, 0]]]
    """
    d = torch.as_tensor(depth, dtype=torch.float32)
    if d.ndim == 3:
        d = d[0]
    d = d.clamp(1.0, max_depth)
    near = 1.0 - torch.log(d) / np.log(max_depth)
    grey = (near * 255.0).round().to(torch.uint8).numpy()
    return np.repeat(grey[..., None], 3, axis=-1)


def preview_grid(
    dataset: Sequence[dict],
    n: int = 8,
    columns: int = 2,
    palette: Optional[Sequence[Sequence[int]]] = None,
    ignore_index: Optional[int] = None,
    indices: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """A uint8 RGB grid: for each item, image | colourised mask | depth (when the item has one).

    Works with any data set whose items hold ``"image"`` (or ``"frames"``, the
    middle frame is shown) and ``"mask"``. ``palette`` and ``ignore_index``
    default to the data set's own (its ``palette`` / ``ignore_index``
    attributes), else CamVid's colours and 255. Save it with
    ``PIL.Image.fromarray(grid).save("preview.png")``.

    Examples:
        >>> from segrobust.datasets import SyntheticStreets
        >>> preview_grid(SyntheticStreets(n=2, size=(12, 16)), n=2, columns=1).shape
        (24, 48, 3)
    """
    picks = list(indices) if indices is not None else list(range(min(n, len(dataset))))
    if not picks:
        raise ValueError("preview_grid needs at least one item")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if palette is None:
        palette = getattr(dataset, "palette", None) or CAMVID_COLORS
    if ignore_index is None:
        ignore_index = getattr(dataset, "ignore_index", IGNORE_INDEX)
    tiles = []
    for i in picks:
        item = dataset[i]
        image = item["image"] if "image" in item else item["frames"][item["frames"].shape[0] // 2]
        parts = [
            (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy(),
            colorize(item["mask"], palette, ignore_index).numpy(),
        ]
        if "depth" in item:
            parts.append(depth_to_rgb(item["depth"]))
        tiles.append(np.concatenate(parts, axis=1))
    blank = np.zeros_like(tiles[0])
    while len(tiles) % columns:
        tiles.append(blank)
    rows = len(tiles) // columns
    # Fill column by column so neighbouring items read top to bottom.
    cols = [np.concatenate(tiles[c * rows : (c + 1) * rows], axis=0) for c in range(columns)]
    gap = np.full((cols[0].shape[0], 4, 3), 255, np.uint8)
    out = cols[0]
    for col in cols[1:]:
        out = np.concatenate([out, gap, col], axis=1)
    return out
