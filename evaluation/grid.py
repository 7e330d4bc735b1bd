"""Files of an evaluation: the needle grid as CSV and as a PNG heatmap (no plotting stack)."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import numpy as np


def grid_matrix(grid: list[dict]) -> tuple[list[float], list[float], np.ndarray]:
    """(lengths in minutes, depths, recall matrix (lengths x depths), NaN where missing)."""
    lengths = sorted({row["minutes"] for row in grid})
    depths = sorted({row["depth"] for row in grid})
    matrix = np.full((len(lengths), len(depths)), np.nan)
    for row in grid:
        matrix[lengths.index(row["minutes"]), depths.index(row["depth"])] = row["recall"]
    return lengths, depths, matrix


def heatmap_rgb(matrix: np.ndarray, cell: int = 32) -> np.ndarray:
    """Red (0) to green (1) cells, grey where missing, a dark line between cells."""
    values = np.nan_to_num(matrix, nan=-1.0)
    red = np.where(values < 0, 128, 255 * (1 - values.clip(0, 1)))
    green = np.where(values < 0, 128, 200 * values.clip(0, 1))
    blue = np.where(values < 0, 128, 40)
    rgb = np.stack([red, green, blue], axis=-1).astype(np.uint8)  # (L, D, 3)
    image = rgb.repeat(cell, axis=0).repeat(cell, axis=1)
    image[::cell, :] = image[:, ::cell] = 30
    return image


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """A minimal truecolour PNG writer (zlib + CRCs), enough for a heatmap."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
    path.write_bytes(png + chunk(b"IEND", b""))
    return path


def write_grid(grid: list[dict], folder: Path) -> dict[str, str]:
    """needle_grid.csv (minutes, depth, recall, videos) and needle_grid.png (rows: length,
    columns: depth)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "needle_grid.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["minutes", "depth", "recall", "videos"])
        writer.writeheader()
        writer.writerows(grid)
    _, _, matrix = grid_matrix(grid)
    png_path = write_png(folder / "needle_grid.png", heatmap_rgb(matrix))
    return {"csv": str(csv_path), "png": str(png_path)}
