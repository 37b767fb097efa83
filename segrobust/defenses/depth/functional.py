"""Functional core of the depth multi-task defence (SGDepth / monodepth2 style).

Everything here is a pure function of tensors: gradient scaling, disparity to
depth, pose vectors to matrices, the photometric error, the auto-masked
minimum reprojection loss, edge-aware smoothness, the combined self-supervised
loss on a frame triplet, and the median-scaled depth error used to evaluate it.

Conventions (the data contract shared with [`segrobust.datasets`][segrobust.datasets]):

- ``frames``: ``(N, 3, C, H, W)`` = (previous, current, next), values in ``[0, 1]``;
  the current frame is the *target* whose depth is predicted.
- ``K``: ``(N, 3, 3)`` pinhole intrinsics in pixels for the ``H x W`` frames.
- ``poses``: ``(N, 2, 4, 4)`` = ``(T_cur->prev, T_cur->next)``; each maps a point
  in the current camera's frame into the previous / next camera's frame
  (``X_prev = T_cur->prev @ X_cur``). This is the ``src_trans_dst`` argument of
  `kornia.geometry.depth.warp_frame_depth` with ``dst`` = current frame.
- disparity: the sigmoid output ``(N, 1, H, W)`` of a depth head, in ``(0, 1)``;
  [`disparity_to_depth`][segrobust.defenses.depth.functional.disparity_to_depth] maps it to metric depth in ``[min_depth, max_depth]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional, Union

import kornia
import torch
import torch.nn.functional as F
from kornia.geometry.camera.perspective import project_points
from kornia.geometry.conversions import axis_angle_to_rotation_matrix, normalize_pixel_coordinates
from kornia.geometry.depth import depth_to_3d_v2, warp_frame_depth
from kornia.geometry.linalg import transform_points

from segrobust.validation import check_choice, check_finite, check_number

__all__ = [
    "DepthLossTerms",
    "ScaleGradient",
    "check_depth_range",
    "check_frames",
    "check_padding_mode",
    "check_weight",
    "depth_loss_terms",
    "disparity_to_depth",
    "edge_aware_smoothness",
    "invert_pose",
    "median_scaled_abs_rel",
    "photometric_error",
    "pose_vec_to_matrix",
    "reprojection_loss",
    "scale_gradient",
    "self_supervised_depth_loss",
    "warp_to_target",
]

_PADDING_MODES = ("border", "zeros", "reflection")


# --------------------------------------------------------------------------- checks


def _check_tensor(value: object, name: str, shape_text: str, dim: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape_text}, got {type(value).__name__}")
    if value.dim() != dim:
        raise ValueError(f"{name} must have shape {shape_text}, got {tuple(value.shape)}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def _check_same_device(reference: torch.Tensor, reference_name: str, **others: torch.Tensor) -> None:
    for name, value in others.items():
        if value.device != reference.device:
            raise ValueError(
                f"{name} is on {value.device} but {reference_name} is on {reference.device}; put both on one device"
            )


def _check_intrinsics(K: object, batch: int, name: str = "K") -> torch.Tensor:
    K = _check_tensor(K, name, "(N, 3, 3)", 3)
    if tuple(K.shape[1:]) != (3, 3) or K.shape[0] not in (1, batch):
        raise ValueError(f"{name} must have shape ({batch}, 3, 3), got {tuple(K.shape)}")
    check_finite(K, name)
    return K.expand(batch, 3, 3)


def _check_poses(poses: object, batch: int, num_sources: int, name: str = "poses") -> torch.Tensor:
    poses = _check_tensor(poses, name, f"(N, {num_sources}, 4, 4)", 4)
    if tuple(poses.shape) != (batch, num_sources, 4, 4):
        raise ValueError(f"{name} must have shape ({batch}, {num_sources}, 4, 4), got {tuple(poses.shape)}")
    check_finite(poses, name)
    return poses


def check_depth_range(min_depth: float, max_depth: float) -> None:
    """``0 < min_depth < max_depth``, both finite numbers (the depth a disparity maps to).

    Examples:
        >>> check_depth_range(0.1, 100.0)
    """
    check_number(min_depth, "min_depth", low=0.0, low_inclusive=False)
    check_number(max_depth, "max_depth", low=0.0, low_inclusive=False)
    if min_depth >= max_depth:
        raise ValueError(f"min_depth must be smaller than max_depth, got {min_depth} >= {max_depth}")


def check_padding_mode(padding_mode: str) -> str:
    """How a warp samples outside the source frame: one of ``"border"``, ``"zeros"``, ``"reflection"``."""
    return check_choice(padding_mode, _PADDING_MODES, "padding_mode")


def check_weight(value: float, name: str, low: float = 0.0, high: float = math.inf) -> float:
    """A finite loss weight or scale in ``[low, high]``, as ``float``."""
    return check_number(value, name, low=low, high=None if math.isinf(high) else high)


# ------------------------------------------------------------------ gradient scaling


class ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale`` backward.

    SGDepth puts one of these where each task's gradient enters the shared
    encoder, so the depth and segmentation losses can be balanced without
    changing either loss. Use [`scale_gradient`][segrobust.defenses.depth.functional.scale_gradient] rather than calling
    ``apply`` directly.

    Examples:
        >>> import torch
        >>> x = torch.ones(2, requires_grad=True)
        >>> ScaleGradient.apply(x, 0.5).sum().backward()
        >>> x.grad
        tensor([0.5000, 0.5000])
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        # view_as: a new tensor object, so autograd records this node
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output * ctx.scale, None


def scale_gradient(tensor: torch.Tensor, scale: float) -> torch.Tensor:
    """Return ``tensor`` unchanged, with its gradient multiplied by ``scale`` on the way back.

    Args:
        tensor: any tensor.
        scale: finite factor applied to the gradient (``0`` blocks it, ``1`` is a no-op).

    Examples:
        >>> import torch
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> y = scale_gradient(x, 0.1)
        >>> torch.equal(y, x)
        True
        >>> (3 * y).sum().backward()
        >>> x.grad
        tensor([0.3000, 0.3000])
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    if scale == 1.0:
        return tensor
    return ScaleGradient.apply(tensor, float(scale))


# --------------------------------------------------------------------- geometry


def disparity_to_depth(disparity: torch.Tensor, min_depth: float = 0.1, max_depth: float = 100.0) -> torch.Tensor:
    """Map a sigmoid disparity in ``[0, 1]`` to depth in ``[min_depth, max_depth]`` (monodepth2 ``disp_to_depth``).

    The disparity is scaled linearly to ``[1 / max_depth, 1 / min_depth]`` and
    inverted, so ``0`` gives ``max_depth`` and ``1`` gives ``min_depth``.

    Examples:
        >>> import torch
        >>> disparity_to_depth(torch.tensor([0.0, 1.0]), min_depth=0.1, max_depth=100.0)
        tensor([100.0000,   0.1000])
    """
    if not isinstance(disparity, torch.Tensor):
        raise TypeError(f"disparity must be a torch.Tensor, got {type(disparity).__name__}")
    check_depth_range(min_depth, max_depth)
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    return 1.0 / (min_disp + (max_disp - min_disp) * disparity)


def pose_vec_to_matrix(axis_angle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """Build ``(N, 4, 4)`` rigid transforms ``X' = R X + t`` from axis-angle and translation.

    With ``invert=True`` the inverse ``X' = R^T (X - t)`` is returned, as monodepth2's
    ``transformation_from_parameters`` does for the frame before the target.

    Args:
        axis_angle: ``(N, 3)`` rotation axis scaled by the angle in radians.
        translation: ``(N, 3)``.
        invert: return the inverse transform.

    Examples:
        >>> import torch
        >>> T = pose_vec_to_matrix(torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 3.0]]))
        >>> T[0, :3, 3]
        tensor([1., 2., 3.])
        >>> pose_vec_to_matrix(torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 3.0]]), invert=True)[0, :3, 3]
        tensor([-1., -2., -3.])
    """
    axis_angle = _check_tensor(axis_angle, "axis_angle", "(N, 3)", 2)
    translation = _check_tensor(translation, "translation", "(N, 3)", 2)
    if axis_angle.shape[1] != 3 or translation.shape != axis_angle.shape:
        raise ValueError(
            f"axis_angle and translation must both have shape (N, 3), got {tuple(axis_angle.shape)} "
            f"and {tuple(translation.shape)}"
        )
    rotation = axis_angle_to_rotation_matrix(axis_angle)
    t = translation.unsqueeze(-1)
    if invert:
        rotation = rotation.transpose(1, 2)
        t = -rotation @ t
    bottom = torch.zeros_like(rotation[:, :1, :])
    bottom = torch.cat([bottom, torch.ones_like(bottom[:, :, :1])], dim=2)
    return torch.cat([torch.cat([rotation, t], dim=2), bottom], dim=1)


def invert_pose(transform: torch.Tensor) -> torch.Tensor:
    """Invert rigid transforms ``(..., 4, 4)`` exactly (``R^T``, ``-R^T t``), without a general inverse.

    Examples:
        >>> import torch
        >>> T = pose_vec_to_matrix(torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[1.0, 0.0, 2.0]]))
        >>> torch.allclose(invert_pose(T) @ T, torch.eye(4), atol=1e-6)
        True
    """
    if not isinstance(transform, torch.Tensor) or transform.shape[-2:] != (4, 4):
        shape = tuple(transform.shape) if isinstance(transform, torch.Tensor) else type(transform).__name__
        raise ValueError(f"transform must have shape (..., 4, 4), got {shape}")
    rotation_t = transform[..., :3, :3].transpose(-1, -2)
    t = -rotation_t @ transform[..., :3, 3:]
    out = transform.clone()
    out[..., :3, :3] = rotation_t
    out[..., :3, 3:] = t
    return out


def warp_to_target(
    source: torch.Tensor,
    target_depth: torch.Tensor,
    source_from_target: torch.Tensor,
    K: torch.Tensor,
    padding_mode: str = "border",
) -> torch.Tensor:
    """Resample a source frame onto the target's pixel grid through the target depth and pose.

    Each target pixel is lifted to 3-D with ``target_depth``, moved by
    ``source_from_target`` (a point in the target camera frame -> the source
    camera frame) and projected into ``source``, which is sampled bilinearly.
    ``padding_mode="zeros"`` is exactly
    `kornia.geometry.depth.warp_frame_depth`; the default ``"border"``
    (monodepth2's choice, so pixels leaving the view do not turn black) composes
    the same kornia steps with a border-padded ``grid_sample``.

    Args:
        source: ``(N, C, H, W)`` image of the source frame.
        target_depth: ``(N, 1, H, W)`` positive depth of the target frame.
        source_from_target: ``(N, 4, 4)``.
        K: ``(N, 3, 3)`` intrinsics.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``.

    Examples:
        >>> import torch
        >>> image = torch.rand(1, 3, 8, 8)
        >>> K = torch.tensor([[[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]]])
        >>> out = warp_to_target(image, torch.ones(1, 1, 8, 8), torch.eye(4)[None], K)
        >>> torch.allclose(out, image, atol=1e-5)
        True
    """
    check_padding_mode(padding_mode)
    if padding_mode == "zeros":
        return warp_frame_depth(source, target_depth, source_from_target, K)
    points_target = depth_to_3d_v2(target_depth.squeeze(1), K)  # (N, H, W, 3)
    points_source = transform_points(source_from_target[:, None], points_target)
    pixels = project_points(points_source, K[:, None, None])
    height, width = target_depth.shape[-2:]
    grid = normalize_pixel_coordinates(pixels, height, width)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


# ------------------------------------------------------------------------ losses


def photometric_error(
    prediction: torch.Tensor,
    target: torch.Tensor,
    ssim_weight: float = 0.85,
    window_size: int = 3,
) -> torch.Tensor:
    """Per-pixel ``ssim_weight·(1−SSIM)/2 + (1−ssim_weight)·|prediction − target|``, averaged over channels.

    The monodepth2 appearance error. SSIM is `kornia.losses.ssim_loss`
    (already ``(1 − SSIM) / 2``, Gaussian window of ``window_size``, reflect
    padding) where monodepth2 uses a 3x3 box window: this project's choice, an
    argument here.

    Args:
        prediction: ``(N, C, H, W)`` in ``[0, 1]`` (e.g. a warped source frame).
        target: ``(N, C, H, W)`` in ``[0, 1]``.
        ssim_weight: weight of the SSIM term in ``[0, 1]`` (0.85 in monodepth2).
        window_size: odd SSIM window size.

    Returns:
        ``(N, 1, H, W)`` non-negative error.

    Examples:
        >>> import torch
        >>> x = torch.rand(1, 3, 8, 8)
        >>> float(photometric_error(x, x).abs().max()) < 1e-6
        True
        >>> photometric_error(x, 1 - x).shape
        torch.Size([1, 1, 8, 8])
    """
    prediction = _check_tensor(prediction, "prediction", "(N, C, H, W)", 4)
    target = _check_tensor(target, "target", "(N, C, H, W)", 4)
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    ssim_weight = check_weight(ssim_weight, "ssim_weight", 0.0, 1.0)
    if not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd integer, got {window_size!r}")
    l1 = (prediction - target).abs().mean(dim=1, keepdim=True)
    if ssim_weight == 0.0:
        return l1
    dssim = kornia.losses.ssim_loss(prediction, target, window_size, reduction="none").mean(dim=1, keepdim=True)
    return ssim_weight * dssim + (1.0 - ssim_weight) * l1


def _as_source_stack(sources: Union[torch.Tensor, Sequence[torch.Tensor]], target: torch.Tensor) -> torch.Tensor:
    if isinstance(sources, torch.Tensor):
        stack = sources
    elif isinstance(sources, Sequence) and len(sources) > 0 and all(isinstance(s, torch.Tensor) for s in sources):
        shapes = {tuple(s.shape) for s in sources}
        if len(shapes) != 1:
            raise ValueError(f"sources must all have the target's shape {tuple(target.shape)}, got {sorted(shapes)}")
        stack = torch.stack(list(sources), dim=1)
    else:
        raise TypeError("sources must be a tensor (N, S, C, H, W) or a non-empty sequence of (N, C, H, W) tensors")
    if stack.dim() != 5 or stack.shape[0] != target.shape[0] or tuple(stack.shape[2:]) != tuple(target.shape[1:]):
        raise ValueError(
            f"sources must have shape (N, S, C, H, W) = ({target.shape[0]}, S, {', '.join(map(str, target.shape[1:]))}), "
            f"got {tuple(stack.shape)}"
        )
    if stack.shape[1] == 0:
        raise ValueError("sources must contain at least one source frame")
    return stack


def reprojection_loss(
    target: torch.Tensor,
    sources: Union[torch.Tensor, Sequence[torch.Tensor]],
    depth: torch.Tensor,
    poses: torch.Tensor,
    K: torch.Tensor,
    automask: bool = True,
    ssim_weight: float = 0.85,
    padding_mode: str = "border",
    noise_scale: float = 1e-5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Monodepth2's per-pixel minimum reprojection loss, with auto-masking.

    Every source frame is warped onto the target through ``depth`` and its
    pose ([`warp_to_target`][segrobust.defenses.depth.functional.warp_to_target]); the loss at a pixel is the minimum of the
    [`photometric_error`][segrobust.defenses.depth.functional.photometric_error] over sources, so occlusions seen in one source
    only do not count. With ``automask`` the errors of the *unwarped* sources
    (identity reprojection, plus noise of ``noise_scale`` to break ties) join
    the minimum: pixels that look static (objects moving with the camera,
    textureless sky) then contribute their identity error, which does not
    depend on depth, and give it no gradient.

    Args:
        target: ``(N, C, H, W)`` target frame in ``[0, 1]``.
        sources: ``(N, S, C, H, W)`` or a sequence of ``S`` tensors ``(N, C, H, W)``.
        depth: ``(N, 1, H, W)`` positive target depth.
        poses: ``(N, S, 4, 4)``; ``poses[:, s]`` maps target-camera points into source ``s``'s camera.
        K: ``(N, 3, 3)`` intrinsics (or ``(1, 3, 3)`` for the whole batch).
        automask: include the identity reprojection in the minimum.
        ssim_weight: see [`photometric_error`][segrobust.defenses.depth.functional.photometric_error].
        padding_mode: see [`warp_to_target`][segrobust.defenses.depth.functional.warp_to_target].
        noise_scale: standard deviation of the tie-break noise on identity errors.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (the ``(N, 1, H, W)`` minimum map).

    Examples:
        >>> import torch
        >>> target = torch.rand(1, 3, 16, 16)
        >>> K = torch.tensor([[[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]])
        >>> identity = torch.eye(4).expand(1, 2, 4, 4)
        >>> loss = reprojection_loss(target, [target, target], torch.ones(1, 1, 16, 16), identity, K)
        >>> float(loss) < 1e-4
        True
    """
    target = _check_tensor(target, "target", "(N, C, H, W)", 4)
    stack = _as_source_stack(sources, target)
    batch, num_sources = stack.shape[:2]
    depth = _check_tensor(depth, "depth", "(N, 1, H, W)", 4)
    if tuple(depth.shape) != (batch, 1, *target.shape[2:]):
        raise ValueError(
            f"depth must have shape ({batch}, 1, {target.shape[2]}, {target.shape[3]}), got {tuple(depth.shape)}"
        )
    poses = _check_poses(poses, batch, num_sources)
    K = _check_intrinsics(K, batch)
    _check_same_device(target, "target", sources=stack, depth=depth, poses=poses, K=K)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    check_padding_mode(padding_mode)
    poses, K = poses.to(depth.dtype), K.to(depth.dtype)

    errors = [
        photometric_error(warp_to_target(stack[:, s], depth, poses[:, s], K, padding_mode), target, ssim_weight)
        for s in range(num_sources)
    ]
    if automask:
        for s in range(num_sources):
            identity = photometric_error(stack[:, s], target, ssim_weight)
            if noise_scale > 0:
                identity = identity + noise_scale * torch.randn_like(identity)
            errors.append(identity)
    minimum = torch.cat(errors, dim=1).min(dim=1, keepdim=True).values
    return minimum.mean() if reduction == "mean" else minimum


def edge_aware_smoothness(disparity: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of the mean-normalised disparity (monodepth2).

    The disparity is divided by its per-image mean (so the term cannot be
    lowered by shrinking the disparity) and passed to
    `kornia.losses.inverse_depth_smoothness_loss`, which weights disparity
    gradients by ``exp(−|image gradient|)``. ``image`` is resized to the
    disparity's size when they differ.

    Examples:
        >>> import torch
        >>> float(edge_aware_smoothness(torch.full((1, 1, 8, 8), 0.3), torch.rand(1, 3, 8, 8)))
        0.0
    """
    disparity = _check_tensor(disparity, "disparity", "(N, 1, H, W)", 4)
    image = _check_tensor(image, "image", "(N, C, H, W)", 4)
    if disparity.shape[1] != 1 or disparity.shape[0] != image.shape[0]:
        raise ValueError(
            f"disparity must have shape (N, 1, H, W) with image's N = {image.shape[0]}, got {tuple(disparity.shape)}"
        )
    if image.shape[-2:] != disparity.shape[-2:]:
        image = F.interpolate(image, size=disparity.shape[-2:], mode="area")
    normalised = disparity / (disparity.mean(dim=(2, 3), keepdim=True) + 1e-7)
    return kornia.losses.inverse_depth_smoothness_loss(normalised, image)


class DepthLossTerms(NamedTuple):
    """The parts of the self-supervised depth loss (all scalars): ``total = reprojection + smoothness``."""

    total: torch.Tensor
    reprojection: torch.Tensor
    smoothness: torch.Tensor


def check_frames(frames: object) -> torch.Tensor:
    frames = _check_tensor(frames, "frames", "(N, 3, C, H, W) = (previous, current, next)", 5)
    if frames.shape[1] != 3:
        raise ValueError(
            f"frames must hold a triplet (previous, current, next) on dim 1, shape (N, 3, C, H, W), got {tuple(frames.shape)}"
        )
    check_finite(frames, "frames")
    lo, hi = float(frames.min()), float(frames.max())
    if lo < -1e-5 or hi > 1 + 1e-5:
        raise ValueError(f"frames must have values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return frames


def _as_scale_list(disparity: Union[torch.Tensor, Sequence[torch.Tensor]], num_scales: int) -> list[torch.Tensor]:
    if isinstance(disparity, torch.Tensor):
        disparity = _check_tensor(disparity, "disparity", "(N, 1, H, W)", 4)
        if not isinstance(num_scales, int) or num_scales < 1:
            raise ValueError(f"num_scales must be a positive integer, got {num_scales!r}")
        # one decoder output: the coarser scales are its bilinear pyramid (this project's reading)
        return [
            disparity if s == 0 else F.interpolate(disparity, scale_factor=0.5**s, mode="bilinear", align_corners=False)
            for s in range(num_scales)
        ]
    if isinstance(disparity, Sequence) and len(disparity) > 0:
        return [_check_tensor(d, f"disparity[{i}]", "(N, 1, h, w)", 4) for i, d in enumerate(disparity)]
    raise TypeError("disparity must be a tensor (N, 1, H, W) or a non-empty sequence of them (finest first)")


def depth_loss_terms(
    disparity: Union[torch.Tensor, Sequence[torch.Tensor]],
    frames: torch.Tensor,
    K: torch.Tensor,
    poses: Optional[torch.Tensor] = None,
    *,
    min_depth: float = 0.1,
    max_depth: float = 100.0,
    smoothness_weight: float = 1e-3,
    automask: bool = True,
    ssim_weight: float = 0.85,
    padding_mode: str = "border",
    num_scales: int = 1,
) -> DepthLossTerms:
    """Monodepth2's self-supervised loss for the current frame of a triplet, split into its terms.

    For each scale ``s`` the disparity is upsampled to the frames' size,
    turned into depth ([`disparity_to_depth`][segrobust.defenses.depth.functional.disparity_to_depth]) and scored by
    [`reprojection_loss`][segrobust.defenses.depth.functional.reprojection_loss] against the previous and next frames; the
    smoothness term ([`edge_aware_smoothness`][segrobust.defenses.depth.functional.edge_aware_smoothness], at the disparity's own
    resolution) is weighted by ``smoothness_weight / 2**s``. Both are averaged
    over scales.

    Args:
        disparity: ``(N, 1, h, w)`` sigmoid disparity of the current frame, or a
            sequence of them, finest first (multi-scale decoders).
        frames: ``(N, 3, C, H, W)`` = (previous, current, next) in ``[0, 1]``.
        K: ``(N, 3, 3)`` intrinsics for ``H x W``.
        poses: ``(N, 2, 4, 4)`` = ``(T_cur->prev, T_cur->next)``.
        min_depth, max_depth: range of [`disparity_to_depth`][segrobust.defenses.depth.functional.disparity_to_depth].
        smoothness_weight: 1e-3 in monodepth2 / SGDepth.
        automask: identity reprojection joins the minimum.
        ssim_weight: see [`photometric_error`][segrobust.defenses.depth.functional.photometric_error].
        padding_mode: see [`warp_to_target`][segrobust.defenses.depth.functional.warp_to_target].
        num_scales: when ``disparity`` is one tensor, also score its bilinear
            down-sampled copies at ``1/2 .. 1/2**(num_scales-1)`` (smp decoders
            emit one scale; this is this project's reading of "multi-scale").

    Examples:
        >>> import torch
        >>> frames = torch.rand(2, 3, 3, 16, 16)
        >>> K = torch.tensor([[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]).expand(2, 3, 3)
        >>> terms = depth_loss_terms(torch.rand(2, 1, 16, 16), frames, K, torch.eye(4).expand(2, 2, 4, 4))
        >>> bool(terms.total > 0)
        True
    """
    frames = check_frames(frames)
    batch, _, _, height, width = frames.shape
    scales = _as_scale_list(disparity, num_scales)
    for i, d in enumerate(scales):
        if d.shape[0] != batch or d.shape[1] != 1:
            raise ValueError(f"disparity[{i}] must have shape ({batch}, 1, h, w), got {tuple(d.shape)}")
        _check_same_device(frames, "frames", disparity=d)
    if poses is None:
        raise ValueError("poses is required: give known poses (N, 2, 4, 4) or predict them with a PoseNet")
    check_depth_range(min_depth, max_depth)
    smoothness_weight = check_weight(smoothness_weight, "smoothness_weight")
    target, sources = frames[:, 1], frames[:, [0, 2]]

    reprojection_total = frames.new_zeros(())
    smoothness_total = frames.new_zeros(())
    for scale, disp in enumerate(scales):
        full = (
            disp
            if disp.shape[-2:] == (height, width)
            else F.interpolate(disp, size=(height, width), mode="bilinear", align_corners=False)
        )
        depth = disparity_to_depth(full, min_depth, max_depth)
        reprojection_total = reprojection_total + reprojection_loss(
            target, sources, depth, poses, K, automask=automask, ssim_weight=ssim_weight, padding_mode=padding_mode
        )
        if smoothness_weight > 0:
            smoothness_total = smoothness_total + smoothness_weight / 2**scale * edge_aware_smoothness(disp, target)
    reprojection_total = reprojection_total / len(scales)
    smoothness_total = smoothness_total / len(scales)
    return DepthLossTerms(reprojection_total + smoothness_total, reprojection_total, smoothness_total)


def self_supervised_depth_loss(
    disparity: Union[torch.Tensor, Sequence[torch.Tensor]],
    batch: Mapping[str, Any],
    poses: Optional[torch.Tensor] = None,
    **kwargs: Any,
) -> torch.Tensor:
    """The scalar monodepth2 loss on a batch ``{"frames", "K", "poses"?}`` (see [`depth_loss_terms`][segrobust.defenses.depth.functional.depth_loss_terms]).

    ``poses`` overrides ``batch["poses"]`` (e.g. poses predicted by a
    [`PoseNet`][segrobust.defenses.PoseNet]); one of the two is required.
    Keyword arguments go to [`depth_loss_terms`][segrobust.defenses.depth.functional.depth_loss_terms].

    Examples:
        >>> import torch
        >>> batch = {"frames": torch.rand(1, 3, 3, 16, 16),
        ...          "K": torch.tensor([[[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]]),
        ...          "poses": torch.eye(4).expand(1, 2, 4, 4)}
        >>> self_supervised_depth_loss(torch.rand(1, 1, 16, 16), batch).dim()
        0
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"batch must be a mapping with keys 'frames', 'K' and optionally 'poses', got {type(batch).__name__}"
        )
    for key in ("frames", "K"):
        if key not in batch:
            raise ValueError(f"batch has no {key!r} entry (keys: {sorted(map(str, batch))})")
    if poses is None:
        poses = batch.get("poses")
    return depth_loss_terms(disparity, batch["frames"], batch["K"], poses, **kwargs).total


# ----------------------------------------------------------------------- metrics


def median_scaled_abs_rel(
    predicted_depth: torch.Tensor,
    true_depth: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    median_scaling: bool = True,
) -> torch.Tensor:
    """Mean absolute relative depth error ``|d̂ − d| / d`` over valid pixels, per image then averaged.

    As in the monodepth2 evaluation: valid pixels have ``min_depth < d < max_depth``;
    with ``median_scaling`` each prediction is first multiplied by
    ``median(d) / median(d̂)`` (self-supervised monocular depth is known only
    up to scale), then clamped to ``[min_depth, max_depth]``.

    Args:
        predicted_depth: ``(N, 1, H, W)`` or ``(N, H, W)`` positive depth.
        true_depth: same shape; pixels outside the range are ignored.

    Examples:
        >>> import torch
        >>> d = torch.rand(2, 1, 8, 8) + 1
        >>> float(median_scaled_abs_rel(3 * d, d)) < 1e-6
        True
    """
    if not isinstance(predicted_depth, torch.Tensor) or not isinstance(true_depth, torch.Tensor):
        raise TypeError("predicted_depth and true_depth must be torch.Tensors")
    if predicted_depth.shape != true_depth.shape or predicted_depth.dim() not in (3, 4):
        raise ValueError(
            "predicted_depth and true_depth must share a shape (N, 1, H, W) or (N, H, W), got "
            f"{tuple(predicted_depth.shape)} and {tuple(true_depth.shape)}"
        )
    check_depth_range(min_depth, max_depth)
    errors = []
    for pred, true in zip(predicted_depth.detach().flatten(1), true_depth.detach().flatten(1)):
        valid = (true > min_depth) & (true < max_depth) & torch.isfinite(true)
        if not bool(valid.any()):
            continue
        pred, true = pred[valid], true[valid]
        if median_scaling:
            pred = pred * (true.median() / pred.median().clamp_min(1e-12))
        pred = pred.clamp(min_depth, max_depth)
        errors.append(((pred - true).abs() / true).mean())
    if not errors:
        raise ValueError(f"true_depth has no pixel in ({min_depth}, {max_depth})")
    return torch.stack(errors).mean()
