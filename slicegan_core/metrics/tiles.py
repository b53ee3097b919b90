"""The tile grid the metrics and the calibration share: non-overlapping square tiles of a 2D image."""
from __future__ import annotations

import numpy as np


def image_tiles(image: np.ndarray, tile: int, limit: int | None = 64) -> list[np.ndarray]:
    """Non-overlapping ``tile x tile`` tiles of a 2D image, centred (the remainder is cut off evenly at the
    edges); at most ``limit`` of them (None: all), spread evenly over the grid. Empty when the image is smaller."""
    rows, cols = image.shape[0] // tile, image.shape[1] // tile
    top, left = (image.shape[0] - rows * tile) // 2, (image.shape[1] - cols * tile) // 2
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    if limit is not None and len(cells) > limit:
        cells = [cells[i] for i in np.linspace(0, len(cells) - 1, limit).round().astype(int)]
    return [image[top + r * tile: top + (r + 1) * tile, left + c * tile: left + (c + 1) * tile] for r, c in cells]
