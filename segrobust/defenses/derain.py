"""Derain networks used as the PEARL preprocessor: image in, image out, both in ``[0, 1]``."""

from __future__ import annotations

import torch
from torch import nn

from segrobust.validation import check_int, check_shape, check_tensor

__all__ = ["DERAINER_FILE_LIMITS", "PReNet", "ResidualUNet", "build_derainer", "check_derainer_arguments"]

#: The architecture arguments a defence *file* may give each derainer, with their ranges
#: (inclusive). A file is data: ``stages=10**9`` would make every forward loop for hours and
#: ``channels=4000`` would ask for gigabytes, so a file asking for more is refused. The
#: ranges hold the published sizes with room to spare (PReNet: 32 channels, 6 stages, 5
#: blocks); Python callers may build any size.
DERAINER_FILE_LIMITS: dict[str, dict[str, tuple[int, int]]] = {
    "prenet": {"channels": (1, 256), "stages": (1, 32), "blocks": (0, 32)},
    "unet": {"width": (1, 256)},
}


def _conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1)


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class PReNet(nn.Module):
    """Progressive recurrent derain network (Ren et al., "Progressive Image Deraining
    Networks: A Better and Simpler Baseline", CVPR 2019), about 150k parameters.

    Each of ``stages`` stages sees the rainy input concatenated with the current
    estimate, passes it through a convolutional LSTM and ``blocks`` residual
    blocks, and predicts a residual added to the rainy input. Weights are shared
    across stages (the "recurrent" in PReNet). Fully convolutional; the output
    is clamped to ``[0, 1]`` (the clamp is the deployed function, so attacks
    see its true gradient).

    Args:
        channels: feature width (32 in the paper).
        stages: number of recurrent stages (6 in the paper).
        blocks: residual blocks per stage (5 in the paper).

    Examples:
        >>> import torch
        >>> net = PReNet(stages=2)
        >>> net(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
        >>> 140_000 < sum(p.numel() for p in net.parameters()) < 180_000
        True
    """

    def __init__(self, channels: int = 32, stages: int = 6, blocks: int = 5):
        super().__init__()
        check_int(stages, "stages", low=1)
        check_int(blocks, "blocks", low=0)
        check_int(channels, "channels", low=1)
        self.stages = stages
        self.channels = channels
        self.head = nn.Sequential(_conv(6, channels), nn.ReLU())
        self.lstm_gates = _conv(2 * channels, 4 * channels)
        self.blocks = nn.Sequential(*[_ResBlock(channels) for _ in range(blocks)])
        self.tail = _conv(channels, 3)

    def forward(self, rainy: torch.Tensor) -> torch.Tensor:
        _check_rainy(rainy)
        n, _, h, w = rainy.shape
        estimate = rainy
        hidden = rainy.new_zeros(n, self.channels, h, w)
        cell = rainy.new_zeros(n, self.channels, h, w)
        for _ in range(self.stages):
            features = self.head(torch.cat([rainy, estimate], dim=1))
            i, f, g, o = self.lstm_gates(torch.cat([features, hidden], dim=1)).chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            hidden = torch.sigmoid(o) * torch.tanh(cell)
            estimate = (rainy + self.tail(self.blocks(hidden))).clamp(0, 1)
        return estimate


class ResidualUNet(nn.Module):
    """A small residual U-Net derainer: predicts a residual added to the rainy input.

    Two down-sampling levels; inputs of any size (padded internally to a
    multiple of 4 and cropped back). Output clamped to ``[0, 1]``.

    Args:
        width: channels at full resolution (doubled at each level).

    Examples:
        >>> import torch
        >>> ResidualUNet(width=8)(torch.rand(2, 3, 18, 22)).shape
        torch.Size([2, 3, 18, 22])
    """

    def __init__(self, width: int = 16):
        super().__init__()
        check_int(width, "width", low=1)
        w1, w2, w3 = width, 2 * width, 4 * width
        self.enc1 = nn.Sequential(_conv(3, w1), nn.ReLU(), _conv(w1, w1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.ReLU(), _conv(w2, w2), nn.ReLU())
        self.enc3 = nn.Sequential(nn.Conv2d(w2, w3, 3, stride=2, padding=1), nn.ReLU(), _conv(w3, w3), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec2 = nn.Sequential(_conv(2 * w2, w2), nn.ReLU())
        self.up1 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
        self.dec1 = nn.Sequential(_conv(2 * w1, w1), nn.ReLU())
        self.out = nn.Conv2d(w1, 3, 1)
        nn.init.zeros_(self.out.weight)  # start as the identity: the derainer first does no harm
        nn.init.zeros_(self.out.bias)

    def forward(self, rainy: torch.Tensor) -> torch.Tensor:
        _check_rainy(rainy)
        h, w = rainy.shape[-2:]
        pad_h, pad_w = (-h) % 4, (-w) % 4
        x = nn.functional.pad(rainy, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else rainy
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([self.up2(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        residual = self.out(d1)[..., :h, :w]
        return (rainy + residual).clamp(0, 1)


def build_derainer(name: str = "prenet", **kwargs) -> nn.Module:
    """Build a derainer by name: ``"prenet"`` or ``"unet"``.

    Examples:
        >>> type(build_derainer("unet", width=8)).__name__
        'ResidualUNet'
    """
    builders = {"prenet": PReNet, "unet": ResidualUNet}
    if name not in builders:
        raise ValueError(f"unknown derainer {name!r}; expected one of {sorted(builders)}")
    return builders[name](**kwargs)


def check_derainer_arguments(name: object, kwargs: object, where: str = "derainer") -> None:
    """Refuse a derainer name or architecture arguments outside `DERAINER_FILE_LIMITS` (``ValueError`` naming ``where``).

    Examples:
        >>> check_derainer_arguments("prenet", {"stages": 10**9}, "defense.pt")
        Traceback (most recent call last):
        ...
        ValueError: defense.pt: derainer argument stages=1000000000 is outside 1..32 for prenet
    """
    if name not in DERAINER_FILE_LIMITS:
        raise ValueError(f"{where}: unknown derainer {name!r}; expected one of {sorted(DERAINER_FILE_LIMITS)}")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}: derainer arguments must be a mapping, got {type(kwargs).__name__}")
    limits = DERAINER_FILE_LIMITS[name]
    for key, value in kwargs.items():
        if key not in limits:
            raise ValueError(
                f"{where}: unknown argument {key!r} of derainer {name!r}; expected some of {sorted(limits)}"
            )
        low, high = limits[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{where}: derainer argument {key}={value!r} is outside {low}..{high} for {name}")


def _check_rainy(rainy: object) -> None:
    # shape only: a value check would cost a host sync inside every attack step
    check_shape(check_tensor(rainy, "rainy images", "(N, 3, H, W)"), (None, 3, None, None), "rainy images")
