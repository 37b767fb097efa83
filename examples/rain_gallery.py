"""Gallery of the differentiable rain presets on CamVid (or procedural) images.

Writes a PNG grid: one row per image, columns clean, light, medium, heavy,
fog_only, plus any extra columns passed to :func:`build_gallery` (e.g. an
"adversarial rain" column made by an attack). Optionally times the renderer
against ``kornia.augmentation.RandomRain`` on an 8×3×360×480 batch.

Usage::

    python examples/rain_gallery.py --out rain_gallery.png
    python examples/rain_gallery.py --fast            # tiny procedural images, seconds
    python examples/rain_gallery.py --benchmark       # also print render timings
    python examples/rain_gallery.py --scale 0.75 --palette --out docs/images/rain_gallery.png
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from segrobust.rain import RAIN_PRESETS, render_rain, sample_rain_params

PRESET_COLUMNS = ("light", "medium", "heavy", "fog_only")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CAMVID = REPO_ROOT.parent / "shared" / "data" / "camvid"

#: A gallery column: maps a batch (N, 3, H, W) in [0, 1] to a same-shape batch.
Column = Callable[[torch.Tensor], torch.Tensor]


def load_camvid_images(root: Path, count: int, split: str = "val") -> torch.Tensor:
    """Read ``count`` images spread over the split list, as ``(N, 3, H, W)`` floats in [0, 1]."""
    lines = [
        line.split()[0] for line in (root / f"{split}.txt").read_text().splitlines() if line.strip()
    ]
    picks = np.linspace(0, len(lines) - 1, count).round().astype(int)
    arrays = [
        np.asarray(Image.open(root / lines[i]).convert("RGB"), dtype=np.float32) / 255.0
        for i in picks
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def procedural_images(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Road-scene-like stand-ins: sky gradient, horizon, grey road, a few coloured boxes."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0, 1, height).view(height, 1)
    images = []
    for _ in range(count):
        sky = torch.stack([0.55 + 0.2 * rows, 0.65 + 0.2 * rows, 0.85 + 0.1 * rows]).expand(
            3, height, width
        )
        road = torch.tensor([0.35, 0.34, 0.33]).view(3, 1, 1) * (0.7 + 0.6 * rows)
        image = torch.where(
            rows.expand(height, width) < 0.5, sky, road.expand(3, height, width)
        ).clone()
        for _ in range(4):
            top = int(torch.randint(height // 4, height // 2, (1,), generator=generator))
            left = int(torch.randint(0, max(1, width - width // 5), (1,), generator=generator))
            colour = torch.rand(3, 1, 1, generator=generator) * 0.7
            image[:, top : top + height // 3, left : left + width // 6] = colour
        images.append(image)
    return torch.stack(images).clamp(0, 1)


def preset_column(name: str, seed: int) -> Column:
    """A column rendering preset ``name`` with a seeded draw."""

    def render(images: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        params = sample_rain_params(
            images.shape[0], tuple(images.shape[-2:]), name, generator=generator
        )
        return render_rain(images, params)

    return render


def build_gallery(
    images: torch.Tensor,
    extra_columns: Optional[Mapping[str, Column]] = None,
    seed: int = 0,
) -> tuple[List[str], torch.Tensor]:
    """Render every column; returns the column titles and a ``(rows, cols, 3, H, W)`` tensor.

    ``extra_columns`` (title -> function of the clean batch) are appended after
    the presets; an attack can add ``{"adversarial rain": attack_fn}`` here.
    """
    columns: Dict[str, Column] = {"clean": lambda batch: batch}
    columns.update({name: preset_column(name, seed + i) for i, name in enumerate(PRESET_COLUMNS)})
    columns.update(extra_columns or {})
    with torch.no_grad():
        rendered = [columns[title](images).clamp(0, 1) for title in columns]
    return list(columns), torch.stack(rendered, dim=1)


def grid_image(
    titles: Sequence[str], cells: torch.Tensor, gap: int = 4, title_height: int = 18
) -> Image.Image:
    """Paste the ``(rows, cols, 3, H, W)`` cells into one RGB image with column titles."""
    rows, cols, _, height, width = cells.shape
    canvas = Image.new(
        "RGB",
        (cols * width + (cols - 1) * gap, title_height + rows * height + (rows - 1) * gap),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    pixels = (cells.permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)
    for c, title in enumerate(titles):
        draw.text((c * (width + gap) + 4, 3), title, fill="black")
        for r in range(rows):
            canvas.paste(
                Image.fromarray(pixels[r, c]),
                (c * (width + gap), title_height + r * (height + gap)),
            )
    return canvas


def benchmark(images: torch.Tensor, repeats: int = 5) -> Dict[str, float]:
    """Median seconds of one rain draw + render on ``images``, ours (each preset) vs kornia's RandomRain."""
    import kornia.augmentation as K

    from segrobust.rain import RandomRainStreaks

    timings: Dict[str, float] = {}
    augmentations = {
        f"RandomRainStreaks[{name}]": RandomRainStreaks.from_preset(name, p=1.0)
        for name in ("light", "heavy")
    }
    augmentations["kornia.RandomRain"] = K.RandomRain(p=1.0)
    for name, augmentation in augmentations.items():
        augmentation(images)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            augmentation(images)
            times.append(time.perf_counter() - start)
        timings[name] = statistics.median(times)
    return timings


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("SEGROBUST_CAMVID", DEFAULT_CAMVID))
    )
    parser.add_argument("--out", type=Path, default=Path("rain_gallery.png"))
    parser.add_argument("--rows", type=int, default=3, help="number of images (rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="resize the written grid (after rendering)"
    )
    parser.add_argument(
        "--palette", action="store_true", help="write a 256-colour PNG (about 3x smaller)"
    )
    parser.add_argument(
        "--fast", action="store_true", help="two small procedural images, for smoke tests"
    )
    parser.add_argument(
        "--benchmark", action="store_true", help="time 8x3x360x480 renders vs kornia RandomRain"
    )
    args = parser.parse_args(argv)

    if args.fast:
        images = procedural_images(2, 72, 96, seed=args.seed)
        source = "procedural"
    elif (args.data_root / "val.txt").exists():
        images = load_camvid_images(args.data_root, args.rows)
        source = f"CamVid val ({args.data_root})"
    else:
        images = procedural_images(args.rows, 360, 480, seed=args.seed)
        source = "procedural (CamVid not found)"
    titles, cells = build_gallery(images, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture = grid_image(titles, cells)
    if args.scale != 1.0:
        picture = picture.resize(
            (round(picture.width * args.scale), round(picture.height * args.scale)), Image.LANCZOS
        )
    if args.palette:
        picture = picture.quantize(256, dither=Image.Dither.NONE)
    picture.save(args.out, optimize=True)
    print(f"wrote {args.out} ({source}, {cells.shape[0]} rows x {cells.shape[1]} columns)")

    if args.benchmark and not args.fast:
        batch = (
            images[torch.arange(8) % images.shape[0]]
            if images.shape[-2:] == (360, 480)
            else torch.rand(8, 3, 360, 480)
        )
        timings = benchmark(batch)
        reference = timings["kornia.RandomRain"]
        for name, seconds in timings.items():
            print(
                f"{name:32s} {seconds * 1000:8.1f} ms  ({seconds / reference:5.2f}x kornia.RandomRain)"
            )


assert set(PRESET_COLUMNS) <= set(RAIN_PRESETS)

if __name__ == "__main__":
    main()
