"""Shared set-up of the CamVid benchmarks: data at reduced resolution and cached trained models.

Models are trained with the library's own recipes (resumable checkpoints), and
cached under ``$SEGROBUST_BENCH_CACHE`` (default ``~/.cache/segrobust/benchmarks``),
keyed by recipe and settings, so the benchmarks that share a model train it once.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Hashable

import torch
from torch.utils.data import Dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAMVID = Path(os.environ.get("SEGROBUST_CAMVID", REPO.parent / "shared" / "data" / "camvid"))
CACHE = Path(os.environ.get("SEGROBUST_BENCH_CACHE", Path.home() / ".cache" / "segrobust" / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results"
NUM_CLASSES = 11


def random_flip(item: dict[str, Any]) -> dict[str, Any]:
    """Horizontal flip, with probability 0.5, of every image-like entry (image, mask, AMA target) together.

    Draws from the global torch RNG, so a resumed run replays it.
    """
    if torch.rand(()) < 0.5:
        return {
            key: value.flip(-1) if torch.is_tensor(value) and value.ndim >= 2 else value for key, value in item.items()
        }
    return item


class Mapped(Dataset):
    """``dataset`` whose items (as new dicts) pass through ``transform``."""

    def __init__(self, dataset: Dataset, transform: Callable[[dict[str, Any]], dict[str, Any]]):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.transform(dict(self.dataset[index]))


def camvid(split: str, size: tuple[int, int], root: Path = DEFAULT_CAMVID):
    from segrobust.datasets import CamVid

    if not (root / f"{split}.txt").exists():
        raise SystemExit(f"CamVid not found at {root} (set SEGROBUST_CAMVID or --data-root)")
    return CamVid(root, split=split, size=size, cache=True)


def build_model(arch: str, encoder: str) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    return smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=NUM_CLASSES)


def run_recipe(name: str) -> Callable[..., list[dict[str, Any]]]:
    """``RECIPES[name]`` (segmenter or defence recipe) as ``(model, data, **config options) -> history``."""
    from segrobust.defenses import RECIPES as DEFENSE_RECIPES
    from segrobust.training import RECIPES

    recipe = {**RECIPES, **DEFENSE_RECIPES}[name]

    def run(model: torch.nn.Module, data: Any, **options: Any) -> list[dict[str, Any]]:
        return recipe(model, data, recipe.config(**options)).history

    return run


def model_key(name: str, arch: str, encoder: str, size: tuple[int, int], epochs: int) -> str:
    """The cache name of a trained model (its weights are ``CACHE / f"{key}.pt"``)."""
    return f"{name}_{arch}-{encoder}_{size[0]}x{size[1]}_e{epochs}"


def trained_model(
    name: str,
    arch: str,
    encoder: str,
    size: tuple[int, int],
    epochs: int,
    recipe: Callable[..., Any],
    recipe_kwargs: dict[str, Any] | None = None,
    batch_size: int = 8,
    lr: float = 1e-3,
    root: Path = DEFAULT_CAMVID,
    log: Callable[[str], None] = print,
    train: Dataset | None = None,
    seed: int | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train (or load from the cache) ``arch-encoder`` with ``recipe``; returns (model, info).

    ``recipe(model, loader, **options) -> history`` takes config options of a
    training recipe (e.g. ``run_recipe("pgd_at")``); ``recipe_kwargs`` adds to them.

    The training data is ``train``, by default CamVid train with random flips.
    ``seed`` (cached under its own name) seeds the initial weights and the
    trainer; ``None`` keeps the trainer's seed 0 and the process's RNG state.
    """
    from torch.utils.data import DataLoader

    from segrobust.training import poly_lr

    key = model_key(name if seed is None else f"{name}-seed{seed}", arch, encoder, size, epochs)
    final = CACHE / f"{key}.pt"
    info_path = CACHE / f"{key}.json"
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(arch, encoder)
    if final.exists():
        model.load_state_dict(torch.load(final, weights_only=True))
        log(f"loaded cached model {final}")
        return model.eval(), json.loads(info_path.read_text()) if info_path.exists() else {}
    train = Mapped(camvid("train", size, root), random_flip) if train is None else train
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    start = time.time()
    history = recipe(
        model,
        loader,
        epochs=epochs,
        optimizer=optimizer,
        scheduler=poly_lr(),
        num_classes=NUM_CLASSES,
        checkpoint_dir=CACHE / f"{key}_ckpt",
        resume=True,
        progress=False,
        **({} if seed is None else {"seed": seed}),
        trainer_kwargs={
            "logger": lambda r: log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})),
        },
        **(recipe_kwargs or {}),
    )
    info = {
        "key": key,
        "train_seconds": round(time.time() - start, 1),
        "epochs": epochs,
        "final_train_loss": history[-1]["loss"] if history else None,
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = final.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, final)
    info_path.write_text(json.dumps(info, indent=2))
    return model.eval(), info


def environment() -> dict[str, Any]:
    import segrobust

    return {
        "torch": torch.__version__,
        "segrobust": segrobust.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def write_rows(name: str, payload: dict[str, Any], merge: list[dict] | None, key: Callable[[dict], Hashable]) -> Path:
    """Write the whole table ``payload``, or (``merge`` given) merge those rows into the file field by field."""
    if merge is None:
        return write_results(name, payload)
    return merge_rows(name, merge, payload["command"], payload, key=key)


def merge_rows(name: str, rows: list[dict], command: str, base: dict, key: Callable[[dict], Hashable]) -> Path:
    """Write ``rows`` into results file ``name``: each updates the row with its ``key`` field by field, the others are added.

    The first run writes ``base`` with its rows; later commands are listed under
    ``appended_commands``. Holds a lock, so parallel runs that each write some
    rows can finish at the same time.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    with (RESULTS / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            return write_results(name, {**base, "command": command, "rows": rows})
        previous = json.loads(path.read_text())
        new = {key(row): row for row in rows}
        previous["rows"] = [{**row, **new.pop(key(row), {})} for row in previous["rows"]] + list(new.values())
        if command != previous["command"] and command not in previous.get("appended_commands", []):
            previous["appended_commands"] = [*previous.get("appended_commands", []), command]
        return write_results(name, previous)
