"""SGDepth-style depth multi-task wrapper for smp segmentation models, and its joint loss."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from segrobust.losses import masked_cross_entropy

from .functional import check_depth_range, disparity_to_depth, scale_gradient

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "DepthMultiTask",
    "DepthMultiTaskCriterion",
    "DepthMultiTaskOutput",
    "MultiTaskLossTerms",
    "depth_multitask_loss",
    "multitask_inputs",
]

#: smp architectures the wrapper was tested on (segmentation-models-pytorch 0.6).
SUPPORTED_ARCHITECTURES = (
    "Unet", "UnetPlusPlus", "FPN", "Linknet", "MAnet", "PSPNet",
    "DeepLabV3", "DeepLabV3Plus", "UPerNet", "Segformer", "PAN", "DPT",
)  # fmt: skip

# encoder feature maps, and the prefix tokens of ViT encoders (DPT) or None
_Features = tuple[list[torch.Tensor], Optional[list[Optional[torch.Tensor]]]]


class DepthMultiTaskOutput(NamedTuple):
    """What [`DepthMultiTask`][segrobust.defenses.DepthMultiTask] returns in training mode.

    Attributes:
        segmentation: logits ``(N, K, H, W)``, identical to the wrapped model's.
        disparity: sigmoid disparity ``(N, 1, H, W)`` in ``(0, 1)``; depth is
            ``disparity_to_depth(disparity, min_depth, max_depth)``.
        classification: the wrapped model's auxiliary label logits ``(N, C)``
            when it was built with ``aux_params``, else ``None``.

    Being a tuple with the logits first, it passes through
    [`segrobust.utils.segmentation_logits`][segrobust.utils.segmentation_logits].
    """

    segmentation: torch.Tensor
    disparity: torch.Tensor
    classification: Optional[torch.Tensor] = None


def _replace_last_conv(head: nn.Module) -> nn.Conv2d:
    """Swap the last ``Conv2d`` of ``head`` for a 1-channel copy and every smp ``Activation`` for identity."""
    try:
        from segmentation_models_pytorch.base.modules import Activation

        activation_types: tuple[type, ...] = (Activation,)
    except ImportError:  # pragma: no cover - older smp layouts
        activation_types = ()

    last_name: Optional[str] = None
    for name, module in head.named_modules():
        if isinstance(module, nn.Conv2d):
            last_name = name
    if last_name is None:
        raise TypeError(f"model.segmentation_head ({type(head).__name__}) has no Conv2d to turn into a depth head")
    parent_name, _, child_name = last_name.rpartition(".")
    parent = head.get_submodule(parent_name) if parent_name else head
    old: nn.Conv2d = getattr(parent, child_name)
    new = nn.Conv2d(
        old.in_channels, 1, old.kernel_size, stride=old.stride, padding=old.padding,
        dilation=old.dilation, bias=True, padding_mode=old.padding_mode,
    ).to(device=old.weight.device, dtype=old.weight.dtype)  # fmt: skip
    setattr(parent, child_name, new)

    for name, module in list(head.named_modules()):
        if name and activation_types and isinstance(module, activation_types):
            parent_name, _, child_name = name.rpartition(".")
            parent = head.get_submodule(parent_name) if parent_name else head
            setattr(parent, child_name, nn.Identity())
    return new


def _reinitialise(module: nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    try:  # smp's own decoder initialisation, so the new decoder starts like a fresh smp one
        from segmentation_models_pytorch.base import initialization

        initialization.initialize_decoder(module)
    except ImportError:  # pragma: no cover
        pass


def _takes_prefix_tokens(decoder: nn.Module) -> bool:
    """DPT's decoder takes ``(features, prefix_tokens)`` from a ViT encoder."""
    try:
        return "prefix_tokens" in inspect.signature(decoder.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _takes_varargs(decoder: nn.Module) -> bool:
    """smp < 0.5 decoders take ``*features``; later ones a list."""
    try:
        parameters = inspect.signature(decoder.forward).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


class DepthMultiTask(nn.Module):
    """SGDepth's multi-task defence for any smp segmentation model: a self-supervised depth branch on its encoder.

    The wrapper adds a depth decoder and a one-channel disparity head that read
    the model's encoder features; the encoder runs once per forward and feeds
    both branches. Training the depth branch with
    [`DepthLoss`][segrobust.defenses.DepthLoss] (frame triplets, no depth
    labels) shapes the shared encoder, which is what SGDepth credits for the
    robustness of the segmentation.

    Generic construction (this project's reading, valid for every smp decoder
    that takes the encoder's feature list): the depth decoder is a deep copy of
    ``model.decoder``, re-initialised; the depth head a deep copy of
    ``model.segmentation_head`` (so each architecture keeps its own upsampling)
    whose last ``Conv2d`` becomes a 1-channel one and whose activation becomes
    identity; a sigmoid gives the disparity, mapped to depth in
    ``[min_depth, max_depth]`` as monodepth2's ``disp_to_depth``.

    Where each task's gradient enters the encoder, a gradient-scaling layer
    (identity forward, gradient times a factor backward) multiplies it by
    ``depth_grad_scale`` (0.9 in SGDepth) or ``seg_grad_scale`` (0.1): every
    encoder feature map is scaled on each branch's input.

    Modes:
        - ``eval()``: ``forward`` is exactly the wrapped model's forward (same
          logits, same output type), so attacks, ART estimators and the
          benchmark see an ordinary segmentation model.
        - ``train()``: ``forward`` returns a [`DepthMultiTaskOutput`][segrobust.defenses.DepthMultiTaskOutput]
          ``(segmentation, disparity, classification)``. Its segmentation
          gradient with respect to the *input* is also scaled by
          ``seg_grad_scale`` (the scaling sits on the encoder features), so
          craft adversarial examples in eval mode.
        - [`forward_multitask`][segrobust.defenses.DepthMultiTask.forward_multitask] returns both outputs in either mode;
          [`predict_depth`][segrobust.defenses.DepthMultiTask.predict_depth] returns metric depth.

    Supported smp architectures (segmentation-models-pytorch 0.6): Unet,
    UnetPlusPlus, FPN, Linknet, MAnet, PSPNet, DeepLabV3, DeepLabV3Plus,
    UPerNet, Segformer, PAN (which, like the plain PAN model, needs inputs of
    at least 128x128) and DPT (its ViT encoder returns ``(features,
    prefix_tokens)``; both are gradient-scaled and passed to each decoder).
    Decoders with the older ``decoder(*features)`` signature (smp < 0.5) are
    detected and called that way. Anything else must follow smp's layout
    (``encoder``, ``decoder``, ``segmentation_head``, the encoder returning a
    list of feature maps) or ``TypeError`` is raised.

    Args:
        model: an smp segmentation model (``encoder``, ``decoder``,
            ``segmentation_head``). It becomes a submodule: its parameters are
            shared, not copied, and its train/eval mode is left as it is.
        depth_grad_scale: factor on the depth gradient entering the encoder.
        seg_grad_scale: factor on the segmentation gradient entering the encoder.
        min_depth, max_depth: depth range of the disparity (monodepth2: 0.1, 100).
        reinitialise_depth_decoder: re-initialise the copied decoder (default)
            instead of starting from the segmentation decoder's weights.
        initial_depth: if given, the disparity head's bias is set so the
            untrained branch predicts about this depth (in ``(min_depth,
            max_depth)``). ``None`` keeps monodepth2's start, a sigmoid near
            0.5, i.e. a depth near ``2 * min_depth``. With known metric poses
            and auto-masking, a start far from the scene's depths makes most
            warps worse than the identity, so auto-masking blanks their
            gradient and training can stall: start at a typical scene depth.

    Examples:
        >>> import torch, segmentation_models_pytorch as smp
        >>> net = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3,
        ...                decoder_channels=(32, 16, 8), classes=4)
        >>> wrapped = DepthMultiTask(net).train()
        >>> out = wrapped(torch.rand(2, 3, 32, 32))
        >>> out.segmentation.shape, out.disparity.shape
        (torch.Size([2, 4, 32, 32]), torch.Size([2, 1, 32, 32]))
        >>> _ = wrapped.eval()
        >>> torch.equal(wrapped(torch.ones(1, 3, 32, 32)), net(torch.ones(1, 3, 32, 32)))
        True
        >>> wrapped.segmentation_model() is net
        True
    """

    def __init__(
        self,
        model: nn.Module,
        depth_grad_scale: float = 0.9,
        seg_grad_scale: float = 0.1,
        min_depth: float = 0.1,
        max_depth: float = 100.0,
        reinitialise_depth_decoder: bool = True,
        initial_depth: Optional[float] = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an smp segmentation model (nn.Module), got {type(model).__name__}")
        name = type(model).__name__
        for part in ("encoder", "decoder", "segmentation_head"):
            if not isinstance(getattr(model, part, None), nn.Module):
                raise TypeError(
                    f"model must be an smp segmentation model with an nn.Module '{part}' "
                    f"(encoder -> decoder -> segmentation_head); {name} has none"
                )
        for arg, value in (("depth_grad_scale", depth_grad_scale), ("seg_grad_scale", seg_grad_scale)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value >= 0
                or value == float("inf")
            ):
                raise ValueError(f"{arg} must be a finite number >= 0, got {value!r}")
        check_depth_range(min_depth, max_depth)

        self.model = model
        self.depth_grad_scale = float(depth_grad_scale)
        self.seg_grad_scale = float(seg_grad_scale)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.depth_decoder = copy.deepcopy(model.decoder)
        if reinitialise_depth_decoder:
            _reinitialise(self.depth_decoder)
        self.depth_head = copy.deepcopy(model.segmentation_head)
        disparity_conv = _replace_last_conv(self.depth_head)
        if initial_depth is not None:
            if (
                isinstance(initial_depth, bool)
                or not isinstance(initial_depth, (int, float))
                or not (min_depth < initial_depth < max_depth)
            ):
                raise ValueError(f"initial_depth must be a number in ({min_depth}, {max_depth}), got {initial_depth!r}")
            disparity = (1 / initial_depth - 1 / max_depth) / (1 / min_depth - 1 / max_depth)
            with torch.no_grad():
                disparity_conv.bias.fill_(math.log(disparity / (1 - disparity)))
        self._decoder_varargs = _takes_varargs(model.decoder)
        self._decoder_takes_tokens = _takes_prefix_tokens(model.decoder)
        # the wrapper starts in the wrapped model's mode without touching the model itself
        self.training = model.training
        self.depth_decoder.train(model.training)
        self.depth_head.train(model.training)

    # ----------------------------------------------------------------- helpers
    def segmentation_model(self) -> nn.Module:
        """The wrapped smp model (shared weights, not a copy): deploy this, without the depth branch."""
        return self.model

    def _decode(self, decoder: nn.Module, features: _Features) -> torch.Tensor:
        maps, tokens = features
        if self._decoder_takes_tokens:
            return decoder(maps, tokens)
        return decoder(*maps) if self._decoder_varargs else decoder(maps)

    def _encode(self, images: torch.Tensor) -> _Features:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a batch (N, C, H, W), got {shape}")
        check = getattr(self.model, "check_input_shape", None)
        if callable(check) and not torch.jit.is_tracing():
            check(images)
        output = self.model.encoder(images)
        tokens: Optional[list[Optional[torch.Tensor]]] = None
        if self._decoder_takes_tokens:  # DPT: (feature maps, prefix tokens)
            if not isinstance(output, (list, tuple)) or len(output) != 2:
                raise TypeError(
                    f"{type(self.model).__name__}.encoder returned {type(output).__name__}; its decoder takes "
                    "prefix tokens, so a pair (features, prefix_tokens) was expected"
                )
            output, tokens = list(output[0]), list(output[1])
        if not isinstance(output, (list, tuple)) or not all(isinstance(f, torch.Tensor) for f in output):
            raise TypeError(
                f"{type(self.model).__name__}.encoder returned {type(output).__name__}, expected a list of "
                "feature tensors (smp encoders)"
            )
        return list(output), tokens

    @staticmethod
    def _scaled(features: _Features, scale: float) -> _Features:
        maps, tokens = features
        maps = [scale_gradient(f, scale) for f in maps]
        if tokens is not None:
            tokens = [t if t is None else scale_gradient(t, scale) for t in tokens]
        return maps, tokens

    def _depth_branch(self, features: _Features, size: tuple[int, int]) -> torch.Tensor:
        raw = self.depth_head(self._decode(self.depth_decoder, self._scaled(features, self.depth_grad_scale)))
        if raw.shape[-2:] != size:  # heads without upsampling to the input size
            raw = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(raw)

    # ----------------------------------------------------------------- forward
    def forward_multitask(self, images: torch.Tensor) -> DepthMultiTaskOutput:
        """Segmentation logits and disparity from one encoder pass, in any mode."""
        features = self._encode(images)
        seg_features = self._scaled(features, self.seg_grad_scale)
        segmentation = self.model.segmentation_head(self._decode(self.model.decoder, seg_features))
        classification = None
        if getattr(self.model, "classification_head", None) is not None:
            classification = self.model.classification_head(seg_features[0][-1])
        disparity = self._depth_branch(features, tuple(images.shape[-2:]))
        return DepthMultiTaskOutput(segmentation, disparity, classification)

    def forward(self, images: torch.Tensor) -> Any:
        """Training mode: [`DepthMultiTaskOutput`][segrobust.defenses.DepthMultiTaskOutput]; eval mode: the wrapped model's own output."""
        if not self.training:
            return self.model(images)
        return self.forward_multitask(images)

    def predict_disparity(self, images: torch.Tensor) -> torch.Tensor:
        """Sigmoid disparity ``(N, 1, H, W)`` from the depth branch only (gradients kept)."""
        return self._depth_branch(self._encode(images), tuple(images.shape[-2:]))

    def predict_depth(self, images: torch.Tensor) -> torch.Tensor:
        """Depth ``(N, 1, H, W)`` in ``[min_depth, max_depth]`` (monodepth2 ``disp_to_depth``)."""
        return disparity_to_depth(self.predict_disparity(images), self.min_depth, self.max_depth)

    def extra_repr(self) -> str:
        return (
            f"depth_grad_scale={self.depth_grad_scale}, seg_grad_scale={self.seg_grad_scale}, "
            f"min_depth={self.min_depth}, max_depth={self.max_depth}"
        )


# ------------------------------------------------------------------ joint loss


class MultiTaskLossTerms(NamedTuple):
    """``total = seg_weight·segmentation + depth_weight·depth``; absent terms are zero tensors."""

    total: torch.Tensor
    segmentation: torch.Tensor
    depth: torch.Tensor


def multitask_inputs(batch: Mapping[str, Any]) -> torch.Tensor:
    """The images a multi-task model should see for ``batch``.

    ``batch["image"]`` when present (the trainer's convention; it must show
    the current frame of any triplet), else the current frame
    ``batch["frames"][:, 1]`` of the triplets.

    Examples:
        >>> import torch
        >>> multitask_inputs({"frames": torch.zeros(2, 3, 3, 8, 8)}).shape
        torch.Size([2, 3, 8, 8])
    """
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping, got {type(batch).__name__}")
    if batch.get("image") is not None:
        return batch["image"]
    if batch.get("frames") is not None:
        frames = batch["frames"]
        if not isinstance(frames, torch.Tensor) or frames.dim() != 5 or frames.shape[1] != 3:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(
                f"batch['frames'] must have shape (N, 3, C, H, W) = (previous, current, next), got {shape}"
            )
        return frames[:, 1]
    raise ValueError(f"batch needs 'image' (N, C, H, W) or 'frames' (N, 3, C, H, W); keys: {sorted(map(str, batch))}")


def depth_multitask_loss(
    output: DepthMultiTaskOutput,
    batch: Mapping[str, Any],
    seg_criterion: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    depth_loss: Optional[Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]] = None,
    seg_weight: float = 1.0,
    depth_weight: float = 1.0,
    ignore_index: int = 255,
) -> MultiTaskLossTerms:
    """SGDepth's joint objective for one batch: segmentation loss on labels, depth loss on triplets.

    ``output`` is the [`DepthMultiTaskOutput`][segrobust.defenses.DepthMultiTaskOutput] of a [`DepthMultiTask`][segrobust.defenses.DepthMultiTask]
    on [`multitask_inputs`][segrobust.defenses.depth.multitask.multitask_inputs] ``(batch)``. The segmentation term is computed
    when ``batch`` has a ``"mask"`` (``seg_criterion(logits, mask)``; default:
    cross-entropy averaged over pixels other than ``ignore_index``); the depth
    term when it has ``"frames"`` and ``depth_loss`` is given
    (``depth_loss(disparity, batch)``, e.g. a
    [`DepthLoss`][segrobust.defenses.DepthLoss]). The task balance inside the
    encoder is the wrapper's gradient scaling; ``seg_weight`` and
    ``depth_weight`` weight the losses themselves (1 and 1 in SGDepth).
    Alternating labelled and video batches (SGDepth's setting) simply gives
    one term per call.

    Examples:
        >>> import torch, segmentation_models_pytorch as smp
        >>> from segrobust.defenses.depth import DepthLoss
        >>> net = DepthMultiTask(smp.Unet("resnet18", encoder_weights=None, encoder_depth=3,
        ...                               decoder_channels=(16, 8, 8), classes=3)).train()
        >>> batch = {"frames": torch.rand(2, 3, 3, 32, 32), "mask": torch.randint(0, 3, (2, 32, 32)),
        ...          "K": torch.tensor([[32.0, 0, 16], [0, 32.0, 16], [0, 0, 1]]).expand(2, 3, 3),
        ...          "poses": torch.eye(4).expand(2, 2, 4, 4)}
        >>> terms = depth_multitask_loss(net(multitask_inputs(batch)), batch, depth_loss=DepthLoss())
        >>> terms.total.backward()
        >>> bool(terms.segmentation > 0) and bool(terms.depth > 0)
        True
    """
    if not isinstance(output, DepthMultiTaskOutput):
        raise TypeError(
            "output must be the DepthMultiTaskOutput of a DepthMultiTask in training mode "
            f"(or of .forward_multitask), got {type(output).__name__}"
        )
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping, got {type(batch).__name__}")
    zero = output.segmentation.new_zeros(())
    seg_term, depth_term = zero, zero
    mask = batch.get("mask")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dim() != 3 or mask.dtype.is_floating_point:
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"batch['mask'] must be an integer tensor (N, H, W), got {shape}")
        if tuple(mask.shape) != (output.segmentation.shape[0], *output.segmentation.shape[2:]):
            raise ValueError(
                f"batch['mask'] shape {tuple(mask.shape)} does not match the segmentation logits "
                f"{tuple(output.segmentation.shape)}"
            )
        mask = mask.long()
        seg_term = (
            seg_criterion(output.segmentation, mask)
            if seg_criterion is not None
            else masked_cross_entropy(output.segmentation, mask, ignore_index)
        )
    if batch.get("frames") is not None and depth_loss is not None:
        depth_term = depth_loss(output.disparity, batch)
    return MultiTaskLossTerms(seg_weight * seg_term + depth_weight * depth_term, seg_term, depth_term)


class DepthMultiTaskCriterion(nn.Module):
    """[`depth_multitask_loss`][segrobust.defenses.depth_multitask_loss] as a trainer loss: ``criterion(outputs, batch) -> {"loss", ...}``.

    Fits [`segrobust.training.AdversarialTrainer`][segrobust.training.AdversarialTrainer]'s ``loss_fn``: the
    trainer feeds ``batch["image"]`` (which must be the current frame of the
    batch's triplets) to a [`DepthMultiTask`][segrobust.defenses.DepthMultiTask] in training mode and passes
    its output here. Returns ``{"loss": total, "seg_loss": ..., "depth_loss": ...}``.
    Put ``criterion.parameters()`` (the pose network's, if any) in the
    optimiser too.

    Examples:
        >>> import torch
        >>> from segrobust.defenses.depth import DepthLoss
        >>> criterion = DepthMultiTaskCriterion(DepthLoss())
        >>> out = DepthMultiTaskOutput(torch.zeros(1, 3, 8, 8), torch.full((1, 1, 8, 8), 0.5))
        >>> sorted(criterion(out, {"mask": torch.zeros(1, 8, 8, dtype=torch.long)}))
        ['depth_loss', 'loss', 'seg_loss']
    """

    def __init__(
        self,
        depth_loss: Optional[nn.Module] = None,
        seg_criterion: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
        seg_weight: float = 1.0,
        depth_weight: float = 1.0,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.depth_loss = depth_loss
        self.seg_criterion = seg_criterion
        self.seg_weight = float(seg_weight)
        self.depth_weight = float(depth_weight)
        self.ignore_index = int(ignore_index)

    def forward(self, outputs: DepthMultiTaskOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        terms = depth_multitask_loss(
            outputs, batch, self.seg_criterion, self.depth_loss, self.seg_weight, self.depth_weight, self.ignore_index
        )
        return {"loss": terms.total, "seg_loss": terms.segmentation, "depth_loss": terms.depth}
