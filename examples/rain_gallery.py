"""Gallery of the differentiable rain presets on CamVid (or procedural) images.

Writes a PNG grid: one row per image, columns clean, light, medium, heavy,
fog_only and "adversarial rain": :class:`segrobust.attacks.RainAttack` with
the ``medium`` ranges as its feasible set, against a small U-Net trained here
(there is no pretrained CamVid model: ``--train-steps`` steps on CamVid train
images at 96×128, about two minutes on one CPU core, or on
:class:`segrobust.datasets.SyntheticStreets` when CamVid is absent). More
columns can be passed to :func:`build_gallery`. Optionally times the renderer
against ``kornia.augmentation.RandomRain`` on an 8×3×360×480 batch.

Usage::

    python examples/rain_gallery.py --out rain_gallery.png
    python examples/rain_gallery.py --fast            # tiny procedural images, seconds
    python examples/rain_gallery.py --benchmark       # also print render timings
    python examples/rain_gallery.py --scale 0.65 --palette --out docs/images/rain_gallery.png
    python examples/rain_gallery.py --no-attack       # preset columns only, no training
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
from torch import nn

from segrobust.rain import RAIN_PRESETS, render_rain, sample_rain_params

PRESET_COLUMNS = ("light", "medium", "heavy", "fog_only")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CAMVID = REPO_ROOT.parent / "shared" / "data" / "camvid"

#: A gallery column: maps a batch (N, 3, H, W) in [0, 1] to a same-shape batch.
Column = Callable[[torch.Tensor], torch.Tensor]


def load_camvid_images(root: Path, count: int, split: str = "val") -> torch.Tensor:
    """Read ``count`` images spread over the split list, as ``(N, 3, H, W)`` floats in [0, 1]."""
    lines = [line.split()[0] for line in (root / f"{split}.txt").read_text().splitlines() if line.strip()]
    picks = np.linspace(0, len(lines) - 1, count).round().astype(int)
    arrays = [np.asarray(Image.open(root / lines[i]).convert("RGB"), dtype=np.float32) / 255.0 for i in picks]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_camvid_masks(root: Path, count: int, split: str = "val") -> torch.Tensor:
    """The masks of :func:`load_camvid_images`' picks, ``(N, H, W)`` int64, void (11) mapped to 255."""
    lines = [line.split()[1] for line in (root / f"{split}.txt").read_text().splitlines() if line.strip()]
    picks = np.linspace(0, len(lines) - 1, count).round().astype(int)
    arrays = [np.asarray(Image.open(root / lines[i]), dtype=np.int64) for i in picks]
    masks = torch.from_numpy(np.stack(arrays))
    return torch.where(masks >= 11, torch.full_like(masks, 255), masks)


def procedural_images(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Road-scene-like stand-ins: sky gradient, horizon, grey road, a few coloured boxes."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0, 1, height).view(height, 1)
    images = []
    for _ in range(count):
        sky = torch.stack([0.55 + 0.2 * rows, 0.65 + 0.2 * rows, 0.85 + 0.1 * rows]).expand(3, height, width)
        road = torch.tensor([0.35, 0.34, 0.33]).view(3, 1, 1) * (0.7 + 0.6 * rows)
        image = torch.where(rows.expand(height, width) < 0.5, sky, road.expand(3, height, width)).clone()
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
        params = sample_rain_params(images.shape[0], tuple(images.shape[-2:]), name, generator=generator)
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


def grid_image(titles: Sequence[str], cells: torch.Tensor, gap: int = 4, title_height: int = 18) -> Image.Image:
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


# --------------------------------------------------------------------------- adversarial rain

#: The small U-Net attacked by the "adversarial rain" column (smp, no pretrained weights).
GALLERY_MODEL_SPEC = "unet:resnet18:encoder_depth=3:decoder_channels=32,16,8"


class ResizedSegmenter(nn.Module):
    """Runs ``model`` at ``size`` and returns its logits at the input's size (both resizes differentiable).

    The gallery model is trained at 96×128 to keep training to a couple of minutes;
    wrapping it lets the attack render rain at full resolution.
    """

    def __init__(self, model: nn.Module, size: tuple[int, int]):
        super().__init__()
        self.model = model
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        small = nn.functional.interpolate(images, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        logits = self.model(small)
        return nn.functional.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def training_data(
    data_root: Path, size: tuple[int, int], count: int, fast: bool
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images and masks to train the gallery model on: CamVid train, or SyntheticStreets without it."""
    if not fast and (data_root / "train.txt").exists():
        from segrobust.datasets import CamVid

        data = CamVid(data_root, split="train", size=size)
        picks = np.linspace(0, len(data) - 1, min(count, len(data))).round().astype(int)
        source = f"CamVid train ({len(picks)} images at {size[0]}x{size[1]})"
    else:
        from segrobust.datasets import SyntheticStreets

        data = SyntheticStreets(n=count, size=size, seed=0, split="train")
        picks = np.arange(count)
        source = f"SyntheticStreets train ({count} images at {size[0]}x{size[1]})"
    items = [data[int(i)] for i in picks]
    images = torch.stack([item["image"] for item in items])
    masks = torch.stack([item["mask"] for item in items])
    return images, masks, source


def train_gallery_model(
    images: torch.Tensor, masks: torch.Tensor, steps: int, batch: int = 8, seed: int = 0
) -> nn.Module:
    """A small smp U-Net (11 CamVid classes) trained for ``steps`` Adam steps with random flips."""
    from segrobust.models import build_model

    torch.manual_seed(seed)
    model = build_model(GALLERY_MODEL_SPEC, num_classes=11).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        index = torch.randint(0, images.shape[0], (min(batch, images.shape[0]),))
        x, y = images[index], masks[index]
        if bool(torch.rand(()) < 0.5):
            x, y = x.flip(-1), y.flip(-1)
        loss = nn.functional.cross_entropy(model(x), y, ignore_index=255)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def adversarial_rain_column(
    model: nn.Module,
    masks: Optional[torch.Tensor] = None,
    ranges: str = "medium",
    steps: int = 10,
    seed: int = 0,
) -> Column:
    """A column rendering :class:`~segrobust.attacks.RainAttack` rain (feasible set: ``ranges``).

    ``masks=None`` attacks the model's own prediction on the clean image.
    """
    from segrobust.attacks import RainAttack

    attack = RainAttack(model, ranges=ranges, steps=steps)

    def render(images: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(seed)  # the random start (a draw from the ranges) is reproducible
        return attack(images, masks)

    return render


def column_scores(
    model: nn.Module, titles: Sequence[str], cells: torch.Tensor, masks: torch.Tensor
) -> Dict[str, tuple[float, float]]:
    """(mIoU, pixel accuracy) of ``model`` on every column, one confusion matrix over the rows."""
    from segrobust.metrics import ConfusionMatrix

    scores = {}
    with torch.no_grad():
        for c, title in enumerate(titles):
            matrix = ConfusionMatrix(11, ignore_index=255)
            matrix.update(model(cells[:, c]), masks)
            result = matrix.compute()
            scores[title] = (float(result.miou), float(result.pixel_accuracy))
    return scores


def benchmark(images: torch.Tensor, repeats: int = 5) -> Dict[str, float]:
    """Median seconds of one rain draw + render on ``images``, ours (each preset) vs kornia's RandomRain."""
    import kornia.augmentation as K

    from segrobust.rain import RandomRainStreaks

    timings: Dict[str, float] = {}
    augmentations = {
        f"RandomRainStreaks[{name}]": RandomRainStreaks.from_preset(name, p=1.0) for name in ("light", "heavy")
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
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get("SEGROBUST_CAMVID", DEFAULT_CAMVID)))
    parser.add_argument("--out", type=Path, default=Path("rain_gallery.png"))
    parser.add_argument("--rows", type=int, default=3, help="number of images (rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="resize the written grid (after rendering)")
    parser.add_argument("--palette", action="store_true", help="write a 256-colour PNG (about 3x smaller)")
    parser.add_argument("--fast", action="store_true", help="two small procedural images, for smoke tests")
    parser.add_argument("--benchmark", action="store_true", help="time 8x3x360x480 renders vs kornia RandomRain")
    parser.add_argument("--no-attack", action="store_true", help="leave out the adversarial rain column")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="training steps of the attacked model (default 200; 8 with --fast)",
    )
    parser.add_argument(
        "--attack-steps",
        type=int,
        default=None,
        help="RainAttack steps (default 10; 3 with --fast)",
    )
    args = parser.parse_args(argv)

    masks: Optional[torch.Tensor] = None
    if args.fast:
        images = procedural_images(2, 72, 96, seed=args.seed)
        source = "procedural"
    elif (args.data_root / "val.txt").exists():
        images = load_camvid_images(args.data_root, args.rows)
        masks = load_camvid_masks(args.data_root, args.rows)
        source = f"CamVid val ({args.data_root})"
    else:
        images = procedural_images(args.rows, 360, 480, seed=args.seed)
        source = "procedural (CamVid not found)"

    extra: Dict[str, Column] = {}
    model: Optional[nn.Module] = None
    if not args.no_attack:
        train_size = (72, 96) if args.fast else (96, 128)
        train_steps = args.train_steps if args.train_steps is not None else (8 if args.fast else 200)
        attack_steps = args.attack_steps if args.attack_steps is not None else (3 if args.fast else 10)
        train_images, train_masks, train_source = training_data(
            args.data_root, train_size, 8 if args.fast else 96, args.fast
        )
        start = time.perf_counter()
        model = ResizedSegmenter(
            train_gallery_model(train_images, train_masks, train_steps, seed=args.seed), train_size
        ).eval()
        print(
            f"trained {GALLERY_MODEL_SPEC} for {train_steps} steps on {train_source} "
            f"in {time.perf_counter() - start:.0f} s"
        )
        extra["adversarial rain"] = adversarial_rain_column(model, masks, "medium", attack_steps, seed=args.seed)
    start = time.perf_counter()
    titles, cells = build_gallery(images, extra_columns=extra, seed=args.seed)
    print(f"rendered the gallery in {time.perf_counter() - start:.1f} s")
    if model is not None:
        reference = masks
        if reference is None:  # no labels: score against the model's clean prediction
            with torch.no_grad():
                reference = model(images).argmax(1)
        label = "labels" if masks is not None else "the clean prediction"
        for title, (miou, accuracy) in column_scores(model, titles, cells, reference).items():
            print(f"  {title:18s} mIoU {miou:.3f}  pixel accuracy {accuracy:.3f}  (vs {label})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture = grid_image(titles, cells)
    if args.scale != 1.0:
        picture = picture.resize((round(picture.width * args.scale), round(picture.height * args.scale)), Image.LANCZOS)
    if args.palette:
        picture = picture.quantize(256, dither=Image.Dither.NONE)
    picture.save(args.out, optimize=True)
    print(f"wrote {args.out} ({source}, {cells.shape[0]} rows x {cells.shape[1]} columns)")

    if args.benchmark and not args.fast:
        batch = (
            images[torch.arange(8) % images.shape[0]] if images.shape[-2:] == (360, 480) else torch.rand(8, 3, 360, 480)
        )
        timings = benchmark(batch)
        reference = timings["kornia.RandomRain"]
        for name, seconds in timings.items():
            print(f"{name:32s} {seconds * 1000:8.1f} ms  ({seconds / reference:5.2f}x kornia.RandomRain)")


assert set(PRESET_COLUMNS) <= set(RAIN_PRESETS)

if __name__ == "__main__":
    main()
