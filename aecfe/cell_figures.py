"""Pictures of predicted cells (Pillow only): fields with labelled boxes, and a gallery of crops per class."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from aecfe.io import read_image

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0))
"""Box colour of class i is ``PALETTE[i % 12]`` (classes in the bundle's order)."""


def class_colour(classes: Sequence[str], name: str) -> tuple[int, int, int]:
    return PALETTE[list(classes).index(name) % len(PALETTE)] if name in classes else (128, 128, 128)


def draw_overlays(cells: pd.DataFrame, images: pd.DataFrame, folder: str | os.PathLike, classes: Sequence[str],
                  max_images: int = 20) -> list[Path]:
    """One PNG per image of ``images`` (at most ``max_images``; columns ``image_path``, ``domain``): the field
    with each cell's box in its predicted class's colour and ``class probability`` above it (``?`` when
    uncertain). ``cells``: the per-cell table (``image``, box ``x1..y2``, ``predicted``, ``probability``,
    ``uncertain``). Images that cannot be read any more are left out."""
    folder = Path(folder)
    written = []
    for _, image in images.head(max_images).iterrows():
        try:
            pixels = read_image(image["image_path"], min_side=1)
        except Exception:  # read when extracted; a file gone since is not worth failing the run
            continue
        picture = Image.fromarray(pixels)
        draw = ImageDraw.Draw(picture)
        width = 1 if min(pixels.shape[:2]) < 300 else 2
        for _, cell in cells[cells["image"] == image["image_path"]].iterrows():
            colour = class_colour(classes, cell["predicted"])
            draw.rectangle([cell["x1"], cell["y1"], cell["x2"], cell["y2"]], outline=colour, width=width)
            text = f"{cell['predicted']} {cell['probability']:.2f}" + (" ?" if cell["uncertain"] else "")
            draw.text((cell["x1"] + 2, max(cell["y1"] - 11, 0)), text, fill=colour)
        folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", f"{image['domain']}__{Path(image['image_path']).stem}") + ".png"
        picture.save(folder / name)
        written.append(folder / name)
    return written


def draw_gallery(store, cells: pd.DataFrame, path: str | os.PathLike, classes: Sequence[str],
                 per_class: int = 8, side: int = 96) -> Path:
    """A PNG grid: one row per class (its name on the left), up to ``per_class`` crops of the cells predicted
    as that class, most probable first, each ``side`` px. Row ``i`` of ``cells`` is cell ``i`` of ``store``."""
    label_width = 130
    canvas = Image.new("RGB", (label_width + per_class * (side + 2), max(len(classes), 1) * (side + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, name in enumerate(classes):
        chosen = cells.index[cells["predicted"] == name]
        chosen = cells.loc[chosen].sort_values("probability", ascending=False).index[:per_class].to_numpy()
        draw.text((4, row * (side + 2) + side // 2 - 6), f"{name} ({int((cells['predicted'] == name).sum())})",
                  fill=class_colour(classes, name))
        if len(chosen):
            for column, crop in enumerate(store.crops(chosen)):
                crop = Image.fromarray(np.transpose(crop, (1, 2, 0))).resize((side, side))
                canvas.paste(crop, (label_width + column * (side + 2), row * (side + 2)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
