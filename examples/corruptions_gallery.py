"""Gallery of the 15 ImageNet-C corruptions and segrobust's rain, at chosen severities.

Writes a PNG grid: one row per corruption (noise, blur, weather, digital, rain),
one column per severity, on a CamVid image (or a procedural SyntheticStreets
scene when CamVid is absent). Every image is corrupted with its own seeded
generator, as the benchmark does, so the gallery is the same on every run.

Usage::

    python examples/corruptions_gallery.py --out corruptions_gallery.png
    python examples/corruptions_gallery.py --fast          # a small procedural image, seconds
    python examples/corruptions_gallery.py --severities 1,3,5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from segrobust.corruptions import CORRUPTIONS, corrupt, resolve_severities

DEFAULT_CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def load_image(fast: bool, root: Path = DEFAULT_CAMVID) -> torch.Tensor:
    """A CamVid validation image at 360×480, else a SyntheticStreets scene; ``(1, 3, H, W)`` in ``[0, 1]``."""
    if not fast:
        try:
            from segrobust.datasets import CamVid

            return CamVid(root, split="val")[0]["image"][None]
        except Exception as error:  # no CamVid here
            print(f"CamVid not available ({type(error).__name__}); using a SyntheticStreets scene")
    from segrobust.datasets import SyntheticStreets

    size = (48, 64) if fast else (360, 480)
    return SyntheticStreets(n=1, size=size, seed=0, split="val")[0]["image"][None]


def build_gallery(image: torch.Tensor, severities: list[int], seed: int = 0) -> dict[str, dict[int, torch.Tensor]]:
    """``{corruption: {severity: image}}`` for every corruption and each severity it defines."""
    gallery: dict[str, dict[int, torch.Tensor]] = {}
    for name, entry in CORRUPTIONS.items():
        gallery[name] = {}
        for level in (s for s in severities if s in entry.severities):
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(seed)
            gallery[name][level] = corrupt(image, name, level, [generator])[0]
            print(f"{entry.display_name:18s} severity {level}: {1000 * (time.perf_counter() - started):7.1f} ms")
    return gallery


def save_gallery(
    image: torch.Tensor, gallery: dict[str, dict[int, torch.Tensor]], severities: list[int], out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(gallery), len(severities) + 1
    height, width = image.shape[-2:]
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows * height / width + 0.4), squeeze=False)
    for r, (name, by_severity) in enumerate(gallery.items()):
        panels = [image[0]] + [by_severity.get(s) for s in severities]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is not None:
                ax.imshow(panel.permute(1, 2, 0).clamp(0, 1).numpy())
            else:
                ax.set_axis_off()
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {severities[c - 1]}", fontsize=8)
        axes[r][0].set_ylabel(CORRUPTIONS[name].display_name, fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("corruptions_gallery.png"))
    parser.add_argument("--severities", default="1,3,5", help="levels in 1..5, e.g. 1,3,5 or 1-5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_CAMVID, help="CamVid folder")
    parser.add_argument("--fast", action="store_true", help="a small procedural image (for tests)")
    args = parser.parse_args()
    severities = resolve_severities(args.severities)
    image = load_image(args.fast, args.data_root)
    gallery = build_gallery(image, severities, args.seed)
    save_gallery(image, gallery, severities, args.out)
    print(f"wrote {args.out} ({len(gallery)} corruptions × severities {severities})")


if __name__ == "__main__":
    main()
