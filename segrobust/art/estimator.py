"""``PyTorchSegmenter``: an ART estimator for semantic-segmentation models."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Optional, Union

import numpy as np
import torch
from art.config import ART_NUMPY_DTYPE
from art.defences.preprocessor.preprocessor import Preprocessor
from art.estimators.pytorch import PyTorchEstimator
from art.preprocessing.standardisation_mean_std.pytorch import StandardisationMeanStdPyTorch
from torch import nn

from segrobust import losses as AF
from segrobust.art._convert import ArrayLike, as_image_tensor, as_mask_tensor, clip_bounds
from segrobust.utils import model_mode_preserved, segmentation_logits

__all__ = ["EstimatorModule", "PyTorchSegmenter"]

logger = logging.getLogger(__name__)

_FIT_KWARGS = {"verbose", "validation_data", "display_progress_bar"}


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _standardisation(preprocessing: object, channels: int) -> object:
    """``(mean, std)`` with per-channel vectors reshaped to ``(C, 1, 1)``.

    ART's standardisation guesses the channel axis from the first batch it sees
    and gets it wrong for images whose width equals the channel count; a
    ``(C, 1, 1)`` shape broadcasts unambiguously over ``(N, C, H, W)``.
    """
    if not isinstance(preprocessing, tuple):
        return preprocessing
    if len(preprocessing) != 2:
        raise ValueError(f"preprocessing must be a (mean, std) tuple, got {len(preprocessing)} items")
    mean, std = (np.asarray(v, dtype=ART_NUMPY_DTYPE) for v in preprocessing)
    if mean.shape != std.shape:
        raise ValueError(f"preprocessing mean {mean.shape} and std {std.shape} must have the same shape")
    if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or np.any(std == 0):
        raise ValueError("preprocessing mean must be finite and std finite and non-zero")
    if mean.ndim == 1 and mean.shape[0] not in (1, channels):
        raise ValueError(f"preprocessing mean/std have {mean.shape[0]} values but the inputs have {channels} channels")
    if mean.ndim == 1 and mean.shape[0] == channels:
        mean, std = mean.reshape(channels, 1, 1), std.reshape(channels, 1, 1)
    return (mean, std)


class EstimatorModule(nn.Module):
    """The forward chain of a [`PyTorchSegmenter`][segrobust.art.PyTorchSegmenter] as a differentiable ``nn.Module``.

    ``images → [unit rescale] → preprocessing defences → standardisation → model → logits``.
    With ``unit_range=True`` inputs are in ``[0, 1]`` and are mapped to the
    estimator's ``clip_values`` first, which is what segrobust's torch attacks
    (and torchattacks) expect. The wrapped model is a registered submodule, so
    ``eval()``/``train()`` and mode bookkeeping reach it.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> est = PyTorchSegmenter(nn.Conv2d(3, 2, 1), input_shape=(3, 8, 8), preprocessing=(0.5, 0.25))
        >>> module = est.as_torch_module()
        >>> module(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 2, 8, 8])
    """

    def __init__(self, estimator: PyTorchSegmenter, unit_range: bool = True):
        super().__init__()
        self.model = estimator.model
        self._estimator = estimator
        low, high = clip_bounds(estimator.clip_values) if unit_range else (0.0, 1.0)
        self._rescale = unit_range and (low, high) != (0.0, 1.0)
        self._low, self._span = low, high - low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._rescale:
            x = x * self._span + self._low
        x, _ = self._estimator.preprocess_torch(x)
        # preprocessing runs in float32; the model gets its own dtype (a bfloat16 model works)
        dtype = next((p.dtype for p in self.model.parameters() if p.dtype.is_floating_point), x.dtype)
        return segmentation_logits(self.model(x.to(dtype)))


class PyTorchSegmenter(PyTorchEstimator):
    """An ART estimator (``PyTorchEstimator`` + ``LossGradientsMixin``) for segmentation models.

    ART has no segmentation estimator; this one lets ART's white-box attacks,
    trainers and defences run on any PyTorch segmenter (smp, torchvision, ...)
    with masks as labels.

    - [`predict`][segrobust.art.PyTorchSegmenter.predict] returns logits ``(N, K, H, W)`` (numpy, batched).
    - [`loss_gradient`][segrobust.art.PyTorchSegmenter.loss_gradient] differentiates the mean pixel cross-entropy over
      valid pixels (``ignore_index`` pixels count for nothing) through the
      preprocessing defences, the standardisation and the model. It takes numpy
      arrays or torch tensors and returns the same kind. Labels may be masks
      ``(N, H, W)`` (integer, or float holding ids as PGD-PyTorch passes them),
      or ``(N, K, H, W)`` logits/one-hot maps (ART's ``y=None`` convention),
      reduced by argmax.
    - [`fit`][segrobust.art.PyTorchSegmenter.fit] trains on masks with the given optimizer.
    - Model outputs may be tensors, tuples (smp ``aux_params``) or
      ``{"out": ...}`` dicts (torchvision).

    Args:
        model: segmentation model returning logits ``(N, K, H, W)``, ``K ≥ 2``.
        input_shape: shape of one input ``(C, H, W)``; ``H, W`` are only used to
            infer ``nb_classes`` (inputs of any size are accepted).
        nb_classes: number of classes ``K``; inferred by one forward pass when None.
        optimizer: optimizer over the model's parameters, needed only by [`fit`][segrobust.art.PyTorchSegmenter.fit].
        ignore_index: mask id whose pixels add nothing to the loss.
        clip_values: ``(min, max)`` of the inputs (default ``(0, 1)``); inputs
            outside it are refused.
        channels_first: must be True (inputs are ``(N, C, H, W)``).
        preprocessing_defences: ART preprocessors applied before the
            standardisation; ``PreprocessorPyTorch`` ones are chained
            differentiably, a numpy one switches to ART's numpy gradient path.
        postprocessing_defences: ART postprocessors applied to [`predict`][segrobust.art.PyTorchSegmenter.predict].
        preprocessing: ``(mean, std)`` standardisation applied inside the
            estimator (per-channel vectors allowed), an ART ``Preprocessor``, or
            None for no standardisation. Unlike ART's base class the default is
            None, not an identity numpy preprocessor.
        device_type: ``"cpu"`` or ``"gpu"`` (the model is moved there); None
            keeps the device the model is on.

    Examples:
        >>> import numpy as np, torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 4, 3, padding=1)
        >>> est = PyTorchSegmenter(model, input_shape=(3, 16, 16), preprocessing=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
        >>> x = np.random.rand(2, 3, 16, 16).astype(np.float32)
        >>> est.predict(x).shape, est.nb_classes
        ((2, 4, 16, 16), 4)
        >>> est.loss_gradient(x, np.zeros((2, 16, 16), np.int64)).shape
        (2, 3, 16, 16)
    """

    estimator_params: ClassVar[list[str]] = [*PyTorchEstimator.estimator_params, "ignore_index", "optimizer"]

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        nb_classes: Optional[int] = None,
        optimizer: Optional[torch.optim.Optimizer] = None,
        ignore_index: int = 255,
        clip_values: Optional[tuple[Any, Any]] = (0.0, 1.0),
        channels_first: bool = True,
        preprocessing_defences: Union[Preprocessor, list[Preprocessor], None] = None,
        postprocessing_defences: Any = None,
        preprocessing: Any = None,
        device_type: Optional[str] = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if channels_first is not True:
            raise ValueError("PyTorchSegmenter supports channels_first=True only: inputs are (N, C, H, W)")
        try:
            shape = tuple(int(v) for v in input_shape)
        except TypeError as err:
            raise TypeError(f"input_shape must be a sequence (C, H, W) of ints, got {input_shape!r}") from err
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W) of positive ints, got {input_shape!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        if device_type not in (None, "cpu", "gpu"):
            raise ValueError(f"device_type must be 'cpu', 'gpu' or None (keep the model's device), got {device_type!r}")
        parameter = next(iter(model.parameters()), None)
        model_device = parameter.device if parameter is not None else torch.device("cpu")
        resolved_type = device_type or ("cpu" if model_device.type == "cpu" else "gpu")

        super().__init__(
            model=model,
            clip_values=clip_values,
            channels_first=True,
            preprocessing_defences=preprocessing_defences,
            postprocessing_defences=postprocessing_defences,
            preprocessing=_standardisation(preprocessing, shape[0]),
            device_type=resolved_type,
        )
        if device_type is None:
            self._device = model_device
        else:
            self._model.to(self._device)
        self._input_shape = shape
        self.ignore_index = int(ignore_index)
        self.optimizer = optimizer
        self._layer_names = [name for name, _ in model.named_modules() if name]
        self._modules_by_name = dict(model.named_modules())
        self._nb_classes = self._infer_nb_classes() if nb_classes is None else _positive_int(nb_classes, "nb_classes")
        if self._nb_classes < 2:
            raise ValueError(
                f"the model predicts {self._nb_classes} class; PyTorchSegmenter needs K ≥ 2 class logits "
                "(cross-entropy); give binary models two output channels"
            )

    # ------------------------------------------------------------------ properties
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample ``(C, H, W)``."""
        return self._input_shape

    @property
    def nb_classes(self) -> int:
        """Number of classes ``K`` of the logits."""
        return self._nb_classes

    @property
    def device(self) -> torch.device:
        """The torch device the model runs on."""
        return self._device

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={type(self._model).__name__}, input_shape={self._input_shape}, "
            f"nb_classes={self._nb_classes}, ignore_index={self.ignore_index}, clip_values={self.clip_values}, "
            f"preprocessing_operations={self.preprocessing_operations}, device={self._device})"
        )

    def set_params(self, **kwargs: Any) -> None:
        """ART's ``set_params``; a ``(mean, std)`` ``preprocessing`` stays a framework (PyTorch) operation.

        (ART's base class would turn the tuple into a numpy standardisation,
        which switches off the all-PyTorch gradient path.)
        """
        if isinstance(kwargs.get("preprocessing"), tuple):
            mean, std = _standardisation(kwargs["preprocessing"], self._input_shape[0])
            kwargs["preprocessing"] = StandardisationMeanStdPyTorch(mean=mean, std=std, device_type=self._device_type)
        super().set_params(**kwargs)

    # ------------------------------------------------------------------ conversions
    def _images(self, x: object, name: str = "x") -> torch.Tensor:
        return as_image_tensor(
            x, channels=self._input_shape[0], clip_values=self.clip_values, device=self._device, name=name
        )

    def _masks(self, y: object, images: torch.Tensor, name: str = "y") -> torch.Tensor:
        return as_mask_tensor(y, images, nb_classes=self._nb_classes, ignore_index=self.ignore_index, name=name)

    def preprocess_torch(
        self, x: torch.Tensor, y: Optional[torch.Tensor] = None, fit: bool = False
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Apply the preprocessing defences and the standardisation to a tensor, keeping the graph.

        Only framework (``PreprocessorPyTorch``) operations can be chained this
        way; with a numpy defence in the chain it raises ``NotImplementedError``.
        """
        if not self.preprocessing_operations:
            return x, y
        if not self.all_framework_preprocessing:
            raise NotImplementedError(
                "a numpy preprocessing defence is in the chain, so it cannot run on torch tensors; "
                "use PreprocessorPyTorch defences (or ART's numpy attacks, which estimate its gradient)"
            )
        for operation in self.preprocessing_operations:
            if operation.apply_fit if fit else operation.apply_predict:
                x, y = operation.forward(x, y)
        return x, y

    def _preprocess_batch(self, x: torch.Tensor, fit: bool = False) -> torch.Tensor:
        """Preprocessed model input for a batch without gradient (numpy path when needed)."""
        if self.all_framework_preprocessing:
            return self.preprocess_torch(x, fit=fit)[0]
        x_np, _ = self._apply_preprocessing(x.cpu().numpy(), None, fit=fit)
        return torch.from_numpy(np.asarray(x_np, dtype=ART_NUMPY_DTYPE)).to(self._device)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = segmentation_logits(self._model(x))
        expected = getattr(self, "_nb_classes", None)  # unset while the constructor infers it
        if expected is not None and logits.shape[1] != expected:
            raise ValueError(
                f"the model predicts {logits.shape[1]} classes (logits {tuple(logits.shape)}) but nb_classes={expected}; "
                "pass the model's number of classes, or nb_classes=None to infer it"
            )
        return logits

    def _check_logits(self, logits: torch.Tensor, masks: torch.Tensor) -> None:
        if logits.shape[0] != masks.shape[0] or logits.shape[2:] != masks.shape[1:]:
            raise ValueError(
                f"model output {tuple(logits.shape)} does not match the masks {tuple(masks.shape)}: "
                "expected logits (N, K, H, W) at the masks' resolution (upsample inside the model)"
            )

    @torch.no_grad()
    def _infer_nb_classes(self) -> int:
        with model_mode_preserved(self._model):
            self._model.eval()
            probe = torch.zeros((1, *self._input_shape), device=self._device)
            if self.clip_values is not None:
                probe = probe + torch.as_tensor(
                    np.asarray(self.clip_values[0]), dtype=torch.float32, device=self._device
                )
            return int(self._logits(self._preprocess_batch(probe)).shape[1])

    def as_torch_module(self, unit_range: bool = True) -> EstimatorModule:
        """This estimator's forward chain as an ``nn.Module`` for torch attacks (see [`EstimatorModule`][segrobust.art.EstimatorModule])."""
        return EstimatorModule(self, unit_range=unit_range)

    # ------------------------------------------------------------------ ART API
    def predict(self, x: ArrayLike, batch_size: int = 128, training_mode: bool = False, **kwargs: Any) -> np.ndarray:
        """Logits ``(N, K, H, W)`` as a float32 numpy array, computed in batches.

        The model's train/eval flags are restored afterwards (ART's own
        estimators leave the model in eval mode).
        """
        batch_size = _positive_int(batch_size, "batch_size")
        images = self._images(x)
        outputs = []
        with model_mode_preserved(self._model), torch.no_grad():
            self._model.train(mode=training_mode)
            for start in range(0, images.shape[0], batch_size):
                batch = self._preprocess_batch(images[start : start + batch_size])
                outputs.append(self._logits(batch).float().cpu().numpy())
        predictions = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)
        if self.postprocessing_defences:
            predictions = self._apply_postprocessing(preds=predictions, fit=False)
        return predictions

    def _mean_loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        self._check_logits(logits, masks)
        pixel_loss = AF.pixel_cross_entropy(logits.float(), masks, self.ignore_index)
        return AF.weighted_pixel_loss(pixel_loss, None, AF.valid_mask(masks, self.ignore_index))

    def loss_gradient(self, x: ArrayLike, y: ArrayLike, training_mode: bool = False, **kwargs: Any) -> ArrayLike:
        """Gradient w.r.t. ``x`` of the mean pixel cross-entropy over valid pixels.

        ``x``: images ``(N, C, H, W)`` within ``clip_values`` (numpy or torch);
        ``y``: masks ``(N, H, W)`` (any numeric dtype holding class ids or
        ``ignore_index``) or ``(N, K, H, W)`` scores (argmax). Returns an array of
        ``x``'s kind, shape and dtype (a tensor on ``x``'s device for tensors).
        No gradient is left on the model's parameters.
        """
        is_tensor = isinstance(x, torch.Tensor)
        images = self._images(x)
        masks = self._masks(y, images)
        with model_mode_preserved(self._model):
            self._model.train(mode=training_mode)
            if self.all_framework_preprocessing:
                images = images.detach().requires_grad_(True)
                inputs, _ = self.preprocess_torch(images)
                target = images
            else:
                x_np = x.detach().cpu().numpy() if is_tensor else x
                inputs_np, _ = self._apply_preprocessing(x_np, None, fit=False)
                inputs = torch.from_numpy(np.asarray(inputs_np, dtype=ART_NUMPY_DTYPE)).to(self._device)
                inputs.requires_grad_(True)
                target = inputs
            loss = self._mean_loss(self._logits(inputs), masks)
            (grad,) = torch.autograd.grad(loss, target)
        if not self.all_framework_preprocessing:
            x_np = x.detach().cpu().numpy() if is_tensor else x
            grad_np = self._apply_preprocessing_gradient(x_np, grad.cpu().numpy())
            grad = torch.from_numpy(np.asarray(grad_np))
        if is_tensor:
            return grad.to(device=x.device, dtype=x.dtype)
        return (
            grad.cpu().numpy().astype(x.dtype if np.issubdtype(x.dtype, np.floating) else ART_NUMPY_DTYPE, copy=False)
        )

    def compute_loss(
        self, x: ArrayLike, y: ArrayLike, reduction: str = "mean", batch_size: int = 128, **kwargs: Any
    ) -> ArrayLike:
        """Pixel cross-entropy over valid pixels: ``"mean"`` (over all valid pixels of ``x``),
        ``"sum"``, or ``"none"`` (one mean per image, shape ``(N,)``). Same kind as ``x``."""
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        batch_size = _positive_int(batch_size, "batch_size")
        images = self._images(x)
        masks = self._masks(y, images)
        sums, counts = [], []
        with model_mode_preserved(self._model), torch.no_grad():
            self._model.eval()
            for start in range(0, images.shape[0], batch_size):
                stop = start + batch_size
                logits = self._logits(self._preprocess_batch(images[start:stop]))
                self._check_logits(logits, masks[start:stop])
                valid = AF.valid_mask(masks[start:stop], self.ignore_index)
                pixel_loss = AF.pixel_cross_entropy(logits.float(), masks[start:stop], self.ignore_index)
                sums.append(pixel_loss.flatten(1).sum(1))
                counts.append(valid.flatten(1).sum(1))
        total, count = torch.cat(sums), torch.cat(counts).float()
        if reduction == "none":
            value = total / count.clamp_min(1)
        elif reduction == "sum":
            value = total.sum()
        else:
            value = total.sum() / count.sum().clamp_min(1)
        return value.to(x.device) if isinstance(x, torch.Tensor) else value.cpu().numpy()

    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike,
        batch_size: int = 128,
        nb_epochs: int = 10,
        training_mode: bool = True,
        drop_last: bool = False,
        scheduler: Optional[Any] = None,
        **kwargs: Any,
    ) -> None:
        """Train the model on images ``x`` and masks ``y`` with the estimator's optimizer.

        Each epoch visits the samples in a fresh ``np.random`` order in batches
        of ``batch_size``, applying the preprocessing chain (``apply_fit``
        operations) and minimising the mean pixel cross-entropy over valid
        pixels. ``scheduler.step()`` runs after each epoch. ART's keyword
        arguments (``verbose``, ``validation_data``) are accepted; ``verbose``
        shows a progress bar. The model's train/eval flags are restored after.
        """
        if self.optimizer is None:
            raise ValueError(
                "fit needs an optimizer: PyTorchSegmenter(model, ..., optimizer=torch.optim.Adam(model.parameters()))"
            )
        batch_size = _positive_int(batch_size, "batch_size")
        if isinstance(nb_epochs, bool) or not isinstance(nb_epochs, (int, np.integer)) or nb_epochs < 0:
            raise ValueError(f"nb_epochs must be a non-negative int, got {nb_epochs!r}")
        unknown = sorted(set(kwargs) - _FIT_KWARGS)
        if unknown:
            warnings.warn(f"PyTorchSegmenter.fit ignores the arguments {unknown}", stacklevel=2)
        verbose = bool(kwargs.get("verbose", False))
        # the whole set is checked and kept on the CPU; each batch is moved to the device
        images = as_image_tensor(
            x, channels=self._input_shape[0], clip_values=self.clip_values, device=torch.device("cpu"), name="x"
        )
        masks = self._masks(y, images)
        n = images.shape[0]
        batches = n // batch_size if drop_last else -(-n // batch_size)
        from tqdm.auto import trange

        with model_mode_preserved(self._model):
            self._model.train(mode=training_mode)
            for _ in trange(int(nb_epochs), desc="PyTorchSegmenter.fit", disable=not verbose):
                order = torch.from_numpy(np.random.permutation(n))  # noqa: NPY002 (ART seeds np.random)
                for b in range(batches):
                    index = order[b * batch_size : (b + 1) * batch_size]
                    batch = images[index].to(self._device)
                    batch_masks = masks[index].to(self._device)
                    with torch.no_grad():
                        batch = self._preprocess_batch(batch, fit=True)
                    loss = self._mean_loss(self._logits(batch), batch_masks)
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            self.optimizer.zero_grad()  # do not keep the last batch's gradients alive

    @property
    def layer_names(self) -> list[str]:
        """Names of the model's submodules (``model.named_modules()``), usable in [`get_activations`][segrobust.art.PyTorchSegmenter.get_activations]."""
        return list(self._layer_names)

    def get_activations(
        self, x: ArrayLike, layer: Union[int, str], batch_size: int = 128, framework: bool = False
    ) -> ArrayLike:
        """Output of the submodule ``layer`` (a name from [`layer_names`][segrobust.art.PyTorchSegmenter.layer_names] or its index).

        With ``framework=True`` ``x`` must be a tensor and a tensor with its graph
        is returned (one pass, no batching); otherwise a numpy array. The input
        goes through the preprocessing chain first.
        """
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not 0 <= layer < len(self._layer_names):
                raise ValueError(f"layer index {layer} out of range [0, {len(self._layer_names)})")
            name = self._layer_names[int(layer)]
        elif isinstance(layer, str):
            if layer not in self._modules_by_name or not layer:
                raise ValueError(f"unknown layer {layer!r}; see estimator.layer_names")
            name = layer
        else:
            raise TypeError(f"layer must be a layer name or index, got {type(layer).__name__}")
        module = self._modules_by_name[name]
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = output if isinstance(output, torch.Tensor) else segmentation_logits(output)
            captured.append(tensor)

        handle = module.register_forward_hook(hook)
        try:
            with model_mode_preserved(self._model):
                self._model.eval()
                if framework:
                    if not isinstance(x, torch.Tensor):
                        raise TypeError("framework=True needs x as a torch.Tensor")
                    self._logits(self.preprocess_torch(x.to(self._device))[0])
                    return captured[0]
                batch_size = _positive_int(batch_size, "batch_size")
                images = self._images(x)
                with torch.no_grad():
                    for start in range(0, images.shape[0], batch_size):
                        self._logits(self._preprocess_batch(images[start : start + batch_size]))
        finally:
            handle.remove()
        return np.concatenate([t.detach().cpu().numpy() for t in captured], axis=0)
