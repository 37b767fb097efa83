"""The torchattacks ``Attack`` API that segrobust's attacks build on, with or without torchattacks.

When torchattacks is importable, `AttackBase` is ``torchattacks.attack.Attack``
(and `MultiAttackBase` is ``torchattacks.MultiAttack``), so every segrobust
attack *is* a torchattacks attack. Otherwise both are [StandaloneAttack][segrobust.attacks.attack_api.StandaloneAttack],
segrobust's own implementation of the part of that API segrobust uses and
promises: the constructor ``(name, model)``, ``device`` / ``set_device``,
``set_model``, ``get_logits``, ``set_normalization_used`` / ``normalize`` /
``inverse_normalize``, the targeted modes (``set_mode_default``,
``set_mode_targeted_by_function``, ``set_mode_targeted_random``,
``set_mode_targeted_least_likely``, ``set_mode_targeted_by_label``,
``get_mode``, ``targeted``), ``set_model_training_mode``, and setters that reach
the attacks an attack holds (as torchattacks' ``MultiAttack`` relies on).

torchattacks is optional because torchattacks 3.5.1 pins ``requests~=2.25.1``
(for a copy of robustbench bundled in its wheel that its attacks never import):
requiring it would downgrade requests, urllib3 and idna for every user.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence, TypeVar

import torch
from torch import nn

__all__ = ["TORCHATTACKS_AVAILABLE", "AttackBase", "MultiAttackBase", "StandaloneAttack"]

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _forwarded(method: _Method) -> _Method:
    """Run a setter on this attack, then on every attack it holds (``self._attacks``)."""

    @functools.wraps(method)
    def wrapper(self: StandaloneAttack, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        for attack in self.__dict__.get("_attacks", {}).values():
            getattr(attack, method.__name__)(*args, **kwargs)
        return result

    return wrapper  # type: ignore[return-value]


class StandaloneAttack:
    """segrobust's own base with the torchattacks ``Attack`` API (used when torchattacks is absent).

    Behaviour follows torchattacks 3.5.1: the device is that of the model's
    first parameter (``None`` for a model without parameters: then inputs stay
    where they are), attacks run with the model in eval mode unless
    ``set_model_training_mode`` says otherwise, and setters reach every attack
    held in an attribute (a list of attacks, for instance).

    Args:
        name: the attack's name (``attack.attack``).
        model: the model to attack.
    """

    def __init__(self, name: str, model: nn.Module):
        self.attack = name
        self._attacks: OrderedDict[str, StandaloneAttack] = OrderedDict()
        self.set_model(model)
        parameter = next(iter(model.parameters()), None)
        self.device: Optional[torch.device] = parameter.device if parameter is not None else None
        self.attack_mode = "default"
        self.supported_mode = ["default"]
        self.targeted = False
        self._target_map_function: Any = None
        self._kth_min = 1
        self.normalization_used: Optional[dict[str, torch.Tensor]] = None
        self._normalization_applied: Optional[bool] = None
        self._model_training = False
        self._batchnorm_training = False
        self._dropout_training = False

    def forward(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        given_training = self.model.training
        self._change_model_mode(given_training)
        try:
            if self._normalization_applied is True:
                self._set_normalization_applied(False)
                try:
                    return self.normalize(self.forward(self.inverse_normalize(inputs), labels))
                finally:
                    self._set_normalization_applied(True)
            return self.forward(inputs, labels)
        finally:
            self._recover_model_mode(given_training)

    # ------------------------------------------------------------------ model and device
    @_forwarded
    def set_model(self, model: nn.Module) -> None:
        self.model = model
        self.model_name = type(model).__name__

    @_forwarded
    def set_device(self, device: Optional[torch.device]) -> None:
        self.device = device

    def get_logits(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Any:
        if self._normalization_applied is False:
            inputs = self.normalize(inputs)
        return self.model(inputs)

    @_forwarded
    def set_model_training_mode(
        self, model_training: bool = False, batchnorm_training: bool = False, dropout_training: bool = False
    ) -> None:
        """Model mode during the attack: eval (default), or train with BatchNorm/Dropout chosen separately."""
        self._model_training = model_training
        self._batchnorm_training = batchnorm_training
        self._dropout_training = dropout_training

    @_forwarded
    def _change_model_mode(self, given_training: bool) -> None:
        if not self._model_training:
            self.model.eval()
            return
        self.model.train()
        for module in self.model.modules():
            name = type(module).__name__
            if ("BatchNorm" in name and not self._batchnorm_training) or (
                "Dropout" in name and not self._dropout_training
            ):
                module.eval()

    @_forwarded
    def _recover_model_mode(self, given_training: bool) -> None:
        if given_training:
            self.model.train()

    # ------------------------------------------------------------------ normalisation
    @_forwarded
    def set_normalization_used(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Inputs are normalised with ``(x − mean) / std``; attacks work in ``[0, 1]`` pixels."""
        channels = len(mean)
        self.normalization_used = {
            "mean": torch.tensor(mean).reshape(1, channels, 1, 1),
            "std": torch.tensor(std).reshape(1, channels, 1, 1),
        }
        self._set_normalization_applied(True)

    @_forwarded
    def _set_normalization_applied(self, flag: Optional[bool]) -> None:
        self._normalization_applied = flag

    def normalize(self, inputs: torch.Tensor) -> torch.Tensor:
        assert self.normalization_used is not None
        mean = self.normalization_used["mean"].to(inputs.device)
        std = self.normalization_used["std"].to(inputs.device)
        return (inputs - mean) / std

    def inverse_normalize(self, inputs: torch.Tensor) -> torch.Tensor:
        assert self.normalization_used is not None
        mean = self.normalization_used["mean"].to(inputs.device)
        std = self.normalization_used["std"].to(inputs.device)
        return inputs * std + mean

    # ------------------------------------------------------------------ modes
    def get_mode(self) -> str:
        return self.attack_mode

    @_forwarded
    def set_mode_default(self) -> None:
        self.attack_mode = "default"
        self.targeted = False
        print("Attack mode is changed to 'default.'")

    @_forwarded
    def _set_mode_targeted(self, mode: str, quiet: bool) -> None:
        if "targeted" not in self.supported_mode:
            raise ValueError("Targeted mode is not supported.")
        self.targeted = True
        self.attack_mode = mode
        if not quiet:
            print(f"Attack mode is changed to '{mode}'.")

    @_forwarded
    def set_mode_targeted_by_function(self, target_map_function: Any, quiet: bool = False) -> None:
        """Targets ``target_map_function(inputs, labels)``; ``None`` uses the given labels as targets."""
        self._set_mode_targeted("targeted(custom)", quiet)
        self._target_map_function = target_map_function

    @_forwarded
    def set_mode_targeted_random(self, quiet: bool = False) -> None:
        self._set_mode_targeted("targeted(random)", quiet)
        self._target_map_function = self.get_random_target_label

    @_forwarded
    def set_mode_targeted_least_likely(self, kth_min: int = 1, quiet: bool = False) -> None:
        self._set_mode_targeted("targeted(least-likely)", quiet)
        if not kth_min > 0:
            raise ValueError(f"kth_min must be >= 1, got {kth_min!r}")
        self._kth_min = kth_min
        self._target_map_function = self.get_least_likely_label

    @_forwarded
    def set_mode_targeted_by_label(self, quiet: bool = False) -> None:
        """The labels passed to the call are the targets."""
        self._set_mode_targeted("targeted(label)", quiet)
        self._target_map_function = "function is a string"

    def get_target_label(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self._target_map_function is None:
            raise ValueError("target_map_function is not initialized by set_mode_targeted.")
        if self.attack_mode == "targeted(label)":
            assert labels is not None
            return labels
        return self._target_map_function(inputs, labels)

    def get_random_target_label(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def get_least_likely_label(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        info = {key: value for key, value in self.__dict__.items() if not key.startswith("_")}
        for key in ("model", "attack", "supported_mode"):
            info.pop(key, None)
        info["attack_mode"] = self.attack_mode
        info["normalization_used"] = self.normalization_used is not None
        return f"{self.attack}(" + ", ".join(f"{key}={value}" for key, value in info.items()) + ")"


try:
    from torchattacks import MultiAttack as _TorchattacksMultiAttack
    from torchattacks.attack import Attack as _TorchattacksAttack
except ImportError:  # torchattacks is an optional extra: pip install "segrobust[torchattacks]"
    _TorchattacksAttack = _TorchattacksMultiAttack = None

#: Whether torchattacks is importable, i.e. whether segrobust's attacks are ``torchattacks.Attack`` objects.
TORCHATTACKS_AVAILABLE: bool = _TorchattacksAttack is not None
#: The base of every segrobust attack: ``torchattacks.attack.Attack``, or [StandaloneAttack][segrobust.attacks.attack_api.StandaloneAttack] without it.
AttackBase: type = _TorchattacksAttack or StandaloneAttack
#: The base of ``SegMultiAttack``: ``torchattacks.MultiAttack``, or [StandaloneAttack][segrobust.attacks.attack_api.StandaloneAttack] without it.
MultiAttackBase: type = _TorchattacksMultiAttack or StandaloneAttack
