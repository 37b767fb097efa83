"""Thin modules over [`segrobust.defenses.depth.functional`][segrobust.defenses.depth.functional]: gradient scaling, pose network, depth loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import nn

from .functional import (
    DepthLossTerms,
    check_depth_range,
    check_frames,
    check_padding_mode,
    check_weight,
    depth_loss_terms,
    pose_vec_to_matrix,
    scale_gradient,
)

__all__ = ["DepthLoss", "GradientScale", "PoseNet", "predict_poses"]

# monodepth2 normalises encoder inputs with these constants
_IMAGE_MEAN, _IMAGE_STD = 0.45, 0.225


class GradientScale(nn.Module):
    """Module form of [`scale_gradient`][segrobust.defenses.depth.functional.scale_gradient].

    Examples:
        >>> import torch
        >>> x = torch.ones(3, requires_grad=True)
        >>> GradientScale(0.9)(x).sum().backward()
        >>> x.grad
        tensor([0.9000, 0.9000, 0.9000])
    """

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(check_weight(scale, "scale", -1e9, 1e9))

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return scale_gradient(tensor, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class PoseNet(nn.Module):
    """Small relative-pose network: two stacked frames in, axis-angle and translation out.

    Input is the 6-channel concatenation ``(frame_a, frame_b)`` (monodepth2's
    "pose_model_input=pairs"); the output, averaged over space and scaled by
    ``output_scale`` (0.01 in monodepth2, so the initial poses are near
    identity), is read as the transform ``T_a->b`` mapping points in camera
    ``a``'s frame into camera ``b``'s: see [`predict_poses`][segrobust.defenses.depth.modules.predict_poses].

    The default encoder is a few strided 3x3 convolutions (``channels``).
    ``encoder_name`` instead builds an smp encoder (e.g. ``"resnet18"``, always
    with ``weights=None``) on 6 input channels, followed by monodepth2's pose
    decoder (1x1 squeeze, two 3x3 convolutions, 1x1 to 6).

    Args:
        channels: widths of the strided convolutions of the default encoder.
        encoder_name: optional smp encoder name replacing the default encoder.
        output_scale: factor applied to the raw 6-vector.

    Examples:
        >>> import torch
        >>> net = PoseNet(channels=(8, 16))
        >>> axis_angle, translation = net(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
        >>> axis_angle.shape, translation.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        encoder_name: Optional[str] = None,
        output_scale: float = 0.01,
    ) -> None:
        super().__init__()
        self.output_scale = check_weight(output_scale, "output_scale")
        self.encoder_name = encoder_name
        if encoder_name is None:
            if len(channels) == 0 or not all(isinstance(c, int) and c > 0 for c in channels):
                raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels!r}")
            layers: list[nn.Module] = []
            in_channels = 6
            for i, width in enumerate(channels):
                kernel = 7 if i == 0 else 3
                layers += [nn.Conv2d(in_channels, width, kernel, stride=2, padding=kernel // 2), nn.ReLU(inplace=True)]
                in_channels = width
            self.encoder: nn.Module = nn.Sequential(*layers)
            self.decoder: nn.Module = nn.Conv2d(in_channels, 6, kernel_size=1)
        else:
            from segmentation_models_pytorch.encoders import get_encoder

            self.encoder = get_encoder(encoder_name, in_channels=6, depth=5, weights=None)
            last = self.encoder.out_channels[-1]
            self.decoder = nn.Sequential(
                nn.Conv2d(last, 256, 1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 6, 1),
            )  # fmt: skip

    def forward(self, frame_a: torch.Tensor, frame_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(axis_angle, translation)``, each ``(N, 3)``, of ``T_a->b``."""
        for name, frame in (("frame_a", frame_a), ("frame_b", frame_b)):
            if not isinstance(frame, torch.Tensor) or frame.dim() != 4 or frame.shape[1] != 3:
                shape = tuple(frame.shape) if isinstance(frame, torch.Tensor) else type(frame).__name__
                raise ValueError(f"{name} must be an RGB batch (N, 3, H, W), got {shape}")
        if frame_a.shape != frame_b.shape:
            raise ValueError(
                f"frame_a and frame_b must share a shape, got {tuple(frame_a.shape)} and {tuple(frame_b.shape)}"
            )
        pair = (torch.cat([frame_a, frame_b], dim=1) - _IMAGE_MEAN) / _IMAGE_STD
        features = self.encoder(pair)
        if isinstance(features, (list, tuple)):  # smp encoders return every stage
            features = features[-1]
        out = self.output_scale * self.decoder(features).mean(dim=(2, 3))
        return out[:, :3], out[:, 3:]


def predict_poses(pose_net: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Predict ``(N, 2, 4, 4) = (T_cur->prev, T_cur->next)`` for a triplet, monodepth2 style.

    Frames are fed in temporal order: ``pose_net(prev, cur)`` gives
    ``T_prev->cur``, which is inverted; ``pose_net(cur, next)`` gives
    ``T_cur->next`` directly.

    Examples:
        >>> import torch
        >>> predict_poses(PoseNet(channels=(8,)), torch.rand(2, 3, 3, 16, 16)).shape
        torch.Size([2, 2, 4, 4])
    """
    frames = check_frames(frames)
    previous, current, following = frames[:, 0], frames[:, 1], frames[:, 2]
    to_previous = pose_vec_to_matrix(*pose_net(previous, current), invert=True)
    to_next = pose_vec_to_matrix(*pose_net(current, following), invert=False)
    return torch.stack([to_previous, to_next], dim=1)


class DepthLoss(nn.Module):
    """The self-supervised monodepth2 loss on a triplet batch, with an optional pose network.

    ``forward(disparity, batch)`` returns the scalar loss for the current
    frame's predicted disparity; ``terms(disparity, batch)`` returns
    [`DepthLossTerms`][segrobust.defenses.depth.functional.DepthLossTerms] for logging.
    ``batch`` is ``{"frames": (N, 3, C, H, W), "K": (N, 3, 3), "poses": (N, 2, 4, 4)?}``
    (see [`segrobust.defenses.depth.functional`][segrobust.defenses.depth.functional] for the conventions).
    Known poses are used when the batch has them and ``use_known_poses`` is
    true; otherwise ``pose_net`` predicts them (put ``DepthLoss.parameters()``
    in the optimiser then: the pose network is trained by this loss).

    Args:
        pose_net: e.g. [`PoseNet`][segrobust.defenses.PoseNet]; required for batches without poses.
        min_depth, max_depth: must match the [`DepthMultiTask`][segrobust.defenses.DepthMultiTask] producing the disparity.
        smoothness_weight: 1e-3 (monodepth2 / SGDepth).
        automask: identity reprojection joins the per-pixel minimum.
        ssim_weight: 0.85.
        padding_mode: ``"border"`` (monodepth2) or ``"zeros"`` (kornia's ``warp_frame_depth``).
        num_scales: see [`depth_loss_terms`][segrobust.defenses.depth.functional.depth_loss_terms].
        use_known_poses: prefer ``batch["poses"]`` over the pose network.

    Examples:
        >>> import torch
        >>> batch = {"frames": torch.rand(2, 3, 3, 32, 32),
        ...          "K": torch.tensor([[32.0, 0, 16], [0, 32.0, 16], [0, 0, 1]]).expand(2, 3, 3)}
        >>> loss = DepthLoss(pose_net=PoseNet(channels=(8, 16)))
        >>> loss(torch.rand(2, 1, 32, 32), batch).dim()
        0
    """

    def __init__(
        self,
        pose_net: Optional[nn.Module] = None,
        min_depth: float = 0.1,
        max_depth: float = 100.0,
        smoothness_weight: float = 1e-3,
        automask: bool = True,
        ssim_weight: float = 0.85,
        padding_mode: str = "border",
        num_scales: int = 1,
        use_known_poses: bool = True,
    ) -> None:
        super().__init__()
        if pose_net is not None and not isinstance(pose_net, nn.Module):
            raise TypeError(f"pose_net must be an nn.Module or None, got {type(pose_net).__name__}")
        check_depth_range(min_depth, max_depth)
        check_padding_mode(padding_mode)
        if isinstance(num_scales, bool) or not isinstance(num_scales, int) or num_scales < 1:
            raise ValueError(f"num_scales must be a positive integer, got {num_scales!r}")
        self.pose_net = pose_net
        self.options: dict[str, Any] = {
            "min_depth": min_depth,
            "max_depth": max_depth,
            "smoothness_weight": check_weight(smoothness_weight, "smoothness_weight"),
            "automask": bool(automask),
            "ssim_weight": check_weight(ssim_weight, "ssim_weight", 0.0, 1.0),
            "padding_mode": padding_mode,
            "num_scales": num_scales,
        }
        self.use_known_poses = bool(use_known_poses)

    def poses_for(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The poses this loss uses for ``batch``: known ones, or the pose network's."""
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"batch must be a mapping with keys 'frames', 'K' and optionally 'poses', got {type(batch).__name__}"
            )
        if "frames" not in batch or "K" not in batch:
            raise ValueError(f"batch must have 'frames' and 'K' entries (keys: {sorted(map(str, batch))})")
        if batch.get("poses") is not None and (self.use_known_poses or self.pose_net is None):
            return batch["poses"]
        if self.pose_net is None:
            raise ValueError(
                "batch has no 'poses' and this DepthLoss has no pose_net: pass DepthLoss(pose_net=PoseNet())"
            )
        return predict_poses(self.pose_net, batch["frames"])

    def terms(self, disparity: Union[torch.Tensor, Sequence[torch.Tensor]], batch: Mapping[str, Any]) -> DepthLossTerms:
        """The loss split into ``total``, ``reprojection`` and ``smoothness``."""
        poses = self.poses_for(batch)
        return depth_loss_terms(disparity, batch["frames"], batch["K"], poses, **self.options)

    def forward(self, disparity: Union[torch.Tensor, Sequence[torch.Tensor]], batch: Mapping[str, Any]) -> torch.Tensor:
        return self.terms(disparity, batch).total

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items()) + f", use_known_poses={self.use_known_poses}"
