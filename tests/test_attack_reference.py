"""Every attack's output under a fixed seed is bit-identical to stored reference outputs.

``tests/data/attack_reference.npz`` holds, for each case below, the adversarial
images and key statistics that the attacks returned when the file was written
(a tiny fixed model and fixed inputs, under ``torch.manual_seed(0)``). A
refactoring of the attacks must leave them bit for bit unchanged.

Bit-identity is a promise of one platform: convolution kernels and reduction
orders differ between CPU instruction sets and torch versions, so the
comparison runs where the file was written (same torch version and CPU
capability, recorded in the file) and is skipped elsewhere with that reason.
The cases run on one torch thread with oneDNN off: oneDNN's convolutions pick
their algorithm by the thread count at first use (measured: 1 and 2 threads
differ by 6e-8 after a few steps), and the rain renderer's reductions split
differently over 2 threads; the comparison is about the attacks' code, not
about torch's thread scheduling.

Regenerate (only when a change of results is intended, and say so in the
commit): ``python tests/test_attack_reference.py --write``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

# run as a script, the repository's segrobust (not an installed copy) and conftest must be found first
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from conftest import TinySegNet, make_blobs  # noqa: E402

import segrobust.attacks as A  # noqa: E402
from segrobust.attacks.ensemble import SEA_LOSSES as SEA3  # noqa: E402  (the form the stored outputs used)

REFERENCE = Path(__file__).resolve().parent / "data" / "attack_reference.npz"
STATS = ("loss", "pixel_accuracy", "best_step", "objective", "step_size", "member_pixel_accuracy", "choice")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinySegNet(width=8).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = make_blobs(2, 12, seed=3)
    masks = masks.clone()
    masks[:, :2, :3] = 255  # some ignored pixels
    return images, masks


def _targeted(attack: Any) -> Any:
    attack.set_mode_targeted_by_label(quiet=True)
    return attack


# name -> the attack on the fixed model; targeted cases attack towards (masks + 1) % 4
CASES: dict[str, Callable[[torch.nn.Module], Any]] = {
    "NAA": lambda m: A.NAA(m),
    "AMA": lambda m: A.AMA(m),
    "SegPGD": lambda m: A.SegPGD(m),
    "CosPGD": lambda m: A.CosPGD(m),
    "EroSeg": lambda m: A.EroSeg(m),
    "NAA-no-random-start": lambda m: A.NAA(m, eps=4 / 255, alpha=1 / 255, steps=5, random_start=False),
    "SegPGD-alpha": lambda m: A.SegPGD(m, eps=4 / 255, alpha=1 / 255, steps=7),
    "EroSeg-cosine": lambda m: A.EroSeg(m, steps=6, q0=0.3, schedule="cosine", kernel_size=3),
    "NAA-targeted": lambda m: _targeted(A.NAA(m, steps=5)),
    "SegPGD-targeted": lambda m: _targeted(A.SegPGD(m, steps=5)),
    "APGD": lambda m: A.APGD(m),
    "APGD-masked_ce-sea": lambda m: A.APGD(m, steps=20, loss="masked_ce", radius_schedule="sea"),
    "APGD-js": lambda m: A.APGD(m, steps=12, loss="js"),
    "APGD-balanced_masked_ce": lambda m: A.APGD(m, steps=12, loss="balanced_masked_ce", radius_schedule="sea"),
    "APGD-eroseg": lambda m: A.APGD(m, steps=12, loss="eroseg"),
    "APGD-segpgd-targeted": lambda m: _targeted(A.APGD(m, steps=12, loss="segpgd")),
    "ReliableEnsemble": lambda m: A.ReliableEnsemble(m, steps=20, losses=SEA3),
    "ReliableEnsemble-no-early-stop": lambda m: A.ReliableEnsemble(m, steps=6, early_stop=False, losses=SEA3),
    "RainAttack": lambda m: A.RainAttack(m, ranges={"length": (2.0, 5.0), "num_layers": 1}, steps=4),
    "RainAttack-pixels": lambda m: A.RainAttack(m, 4 / 255, steps=4, ranges={"length": (2.0, 5.0)}),
    "SegMultiAttack": lambda m: A.SegMultiAttack([A.NAA(m, steps=3), A.CosPGD(m, steps=3)]),
}


def run_case(name: str) -> dict[str, np.ndarray]:
    """The case's adversarial images and statistics, as numpy arrays."""
    model = _model()
    images, masks = _inputs()
    attack = CASES[name](model)
    if getattr(attack, "targeted", False):
        masks = torch.where(masks == 255, masks, (masks + 1) % 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():  # the flags context warns about TF32 on Intel GPUs
            warnings.simplefilter("ignore", UserWarning)
            with torch.backends.mkldnn.flags(enabled=False):
                torch.manual_seed(0)
                if isinstance(attack, A.SegMultiAttack):
                    adv, stats = attack(images, masks), None
                else:
                    adv, stats = attack(images, masks, return_stats=True)
    finally:
        torch.set_num_threads(threads)
    out = {"images": adv.numpy()}
    for key in STATS:
        value = getattr(stats, key, None)
        if isinstance(value, torch.Tensor):
            out[key] = value.numpy()
    return out


def _platform() -> str:
    return f"torch {torch.__version__.split('+')[0]}, CPU {torch.backends.cpu.get_cpu_capability()}"


def _stored() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", sorted(CASES))
def test_attack_outputs_are_bit_identical_to_the_stored_reference(name):
    stored = _stored()
    platform = str(stored["__platform__"])
    if platform != _platform():
        pytest.skip(f"reference written on {platform}, this is {_platform()}: bit-identity is a same-platform promise")
    expected = {key.split("/", 1)[1]: value for key, value in stored.items() if key.startswith(name + "/")}
    assert expected, f"no stored reference for {name}"
    actual = run_case(name)
    for key, value in expected.items():
        assert key in actual, f"{name}: {key} is no longer returned"
        assert actual[key].dtype == value.dtype and actual[key].shape == value.shape, (name, key)
        assert np.array_equal(actual[key], value, equal_nan=True), f"{name}: {key} differs from the stored reference"


def _write() -> None:
    arrays: dict[str, Any] = {"__platform__": np.array(_platform())}
    for name in CASES:
        for key, value in run_case(name).items():
            arrays[f"{name}/{key}"] = value
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, **arrays)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes, {len(CASES)} cases, {_platform()})")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_attack_reference.py --write")
    _write()
