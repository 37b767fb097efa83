"""Shared fixtures: tiny models and procedural data, so no test needs a download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

# One torch thread per pytest-xdist worker (two workers share two cores), two without xdist.
_DEFAULT_THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
torch.set_num_threads(max(1, min(2, int(os.environ.get("SEGROBUST_TEST_THREADS", _DEFAULT_THREADS)))))

REPO = Path(__file__).resolve().parents[1]
CAMVID_ROOT = Path(os.environ.get("SEGROBUST_CAMVID", REPO.parent / "shared" / "data" / "camvid"))

NUM_CLASSES = 4
# Class colours close enough that an 8/255 budget matters, far enough to learn quickly.
_CLASS_COLOURS = torch.tensor([[0.45, 0.45, 0.45], [0.60, 0.40, 0.35], [0.35, 0.55, 0.40], [0.40, 0.42, 0.62]])


def make_blobs(n: int, size: int = 32, seed: int = 0, noise: float = 0.06) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural scenes: a background and random rectangles of 3 classes, each class a colour
    plus texture noise. Returns images ``(n, 3, size, size)`` in [0, 1] and masks ``(n, size, size)``."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for _ in range(4):
            cls = int(torch.randint(1, NUM_CLASSES, (1,), generator=g))
            h, w = (int(v) for v in torch.randint(size // 6, size // 2, (2,), generator=g))
            top, left = (
                int(torch.randint(0, size - h, (1,), generator=g)),
                int(torch.randint(0, size - w, (1,), generator=g)),
            )
            masks[i, top : top + h, left : left + w] = cls
    images = _CLASS_COLOURS[masks].permute(0, 3, 1, 2).contiguous()
    images += noise * torch.randn(images.shape, generator=g)
    return images.clamp(0, 1), masks


class TinySegNet(nn.Module):
    """A small fully convolutional segmenter with BatchNorm and Dropout (to test mode handling)."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Dropout2d(0.1),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PixelwiseNet(nn.Module):
    """Each output pixel depends only on the same input pixel (1×1 convolutions)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 1), nn.Tanh(), nn.Conv2d(16, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def train_segmenter(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    steps: int = 150,
    lr: float = 0.01,
    batch: int = 16,
    seed: int = 0,
) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch,))
        out = model(images[idx])
        out = out[0] if isinstance(out, tuple) else out
        loss = nn.functional.cross_entropy(out, masks[idx], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def blobs():
    return make_blobs(64, 32, seed=0)


@pytest.fixture(scope="session")
def blobs_test():
    return make_blobs(8, 32, seed=1)


@pytest.fixture(scope="session")
def trained_tiny(blobs):
    images, masks = blobs
    torch.manual_seed(0)
    return train_segmenter(TinySegNet(), images, masks, steps=200)


@pytest.fixture(scope="session")
def trained_smp(blobs):
    """A small smp Unet (resnet18 encoder, depth 3) trained on procedural blobs."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    model = smp.Unet(
        "resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=NUM_CLASSES
    )
    images, masks = blobs
    return train_segmenter(model, images, masks, steps=120, lr=3e-3)


def requires_camvid():
    return pytest.mark.skipif(
        not (CAMVID_ROOT / "train.txt").exists(), reason=f"CamVid not found at {CAMVID_ROOT} (set SEGROBUST_CAMVID)"
    )


def error_reading_fifo(path: Path, load) -> BaseException:
    """Replace the file ``path`` by a FIFO and return what ``load()`` raises; fail if it blocks or succeeds.

    A blocked reader is released (the FIFO opened for writing and closed) so the test fails instead of hanging.
    """
    import threading

    path.unlink()
    os.mkfifo(path)
    outcome: dict = {}

    def run() -> None:
        try:
            load()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"reading the FIFO {path} blocked")
    if "error" not in outcome:
        pytest.fail(f"the FIFO {path} was read without an error")
    return outcome["error"]
