"""PEARL's derainer as an ART preprocessing defence."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from torch import nn

__all__ = ["PEARLPreprocessor"]


class PEARLPreprocessor(PreprocessorPyTorch):
    """Runs a PEARL derainer in front of any ART PyTorch estimator, differentiably.

    Put it in ``preprocessing_defences`` of [`PyTorchSegmenter`][segrobust.art.PyTorchSegmenter]
    (or of any ART PyTorch estimator): the estimator then computes
    ``model(derainer(x))`` and its ``loss_gradient`` flows through the
    derainer, so ART's attacks see the whole PEARL pipeline (no gradient
    masking), exactly as [`segrobust.defenses.PEARL`][segrobust.defenses.PEARL] does in torch.
    The derainer runs in eval mode and is never trained by the estimator.

    Args:
        derainer: image-to-image module, ``(N, 3, H, W)`` in ``[0, 1]`` to the
            same shape and range (e.g. a trained [`PReNet`][segrobust.defenses.PReNet]).
        device_type: ``"cpu"`` or ``"gpu"``, as in ART.
        apply_fit: also apply it when the estimator is fitted (default: no,
            PEARL trains the segmenter on clean data).
        apply_predict: apply it at prediction and attack time.

    Examples:
        >>> import torch
        >>> from segrobust.defenses.derain import ResidualUNet
        >>> defence = PEARLPreprocessor(ResidualUNet(width=8), device_type="cpu")
        >>> x, _ = defence.forward(torch.rand(1, 3, 8, 8))
        >>> x.shape
        torch.Size([1, 3, 8, 8])
    """

    params: ClassVar[list[str]] = ["derainer", "apply_fit", "apply_predict"]

    def __init__(
        self, derainer: nn.Module, device_type: str = "gpu", apply_fit: bool = False, apply_predict: bool = True
    ):
        super().__init__(device_type=device_type, is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict)
        if not isinstance(derainer, nn.Module):
            raise TypeError(f"derainer must be a torch.nn.Module, got {type(derainer).__name__}")
        self.derainer = derainer.to(self.device).eval()

    def forward(self, x: torch.Tensor, y: Optional[Any] = None) -> tuple[torch.Tensor, Optional[Any]]:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"x must be a tensor (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        self.derainer.eval()
        return self.derainer(x.to(self.device)), y

    def _check_params(self) -> None:
        if not isinstance(self.derainer, nn.Module):
            raise TypeError(f"derainer must be a torch.nn.Module, got {type(self.derainer).__name__}")
