"""Tiny data, model and attack for the training tests, and the worker that tests/test_training.py runs under torchrun.

Run as ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_worker.py OUT_DIR``.
Each rank writes ``OUT_DIR/rank{r}.pt`` with its final weights and history of
(a) an uninterrupted run and (b) a run killed mid-epoch and resumed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segrobust.training import AdversarialTrainer, Callback, masked_cross_entropy
from segrobust.utils import model_mode_preserved, segmentation_logits

NUM_CLASSES = 3


class TinySegmentation(Dataset):
    """Images whose classes are decided by two colour thresholds; a void band labelled 255."""

    def __init__(self, size: int, seed: int = 0, hw: int = 16):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(size, 3, hw, hw, generator=generator)
        masks = (self.images[:, 0] > 0.5).long() + (self.images[:, 1] > 0.5).long()
        masks[:, :, :2] = 255
        self.masks = masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "mask": self.masks[index]}


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, NUM_CLASSES, 1))


def pgd_factory(eps: float = 4 / 255, alpha: float = 2 / 255, steps: int = 2, random_start: bool = True):
    """A factory ``make(model) -> attack(images, masks)``: L∞ PGD on the masked cross-entropy."""

    def make(model: nn.Module):
        def attack(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
            x = images.clone()
            if random_start:
                x = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
            with model_mode_preserved(model):
                model.eval()
                for _ in range(steps):
                    x.requires_grad_(True)
                    loss = masked_cross_entropy(segmentation_logits(model(x)), masks)
                    (grad,) = torch.autograd.grad(loss, x)
                    x = x.detach() + alpha * grad.sign()
                    x = torch.min(torch.max(x, images - eps), images + eps).clamp(0, 1)
            return x.detach()

        return attack

    return make


class KillAt(Callback):
    """Simulates a crash: raises after the given global step."""

    def __init__(self, global_step: int):
        self.global_step = global_step

    def on_step_end(self, trainer, info):
        if info["global_step"] == self.global_step:
            raise KeyboardInterrupt(f"killed after step {self.global_step}")


def _trainer(model, checkpoint_dir, **kwargs) -> AdversarialTrainer:
    loader = DataLoader(TinySegmentation(12, seed=1), batch_size=3, shuffle=True)  # the trainer shards it
    eval_loader = DataLoader(TinySegmentation(9, seed=2), batch_size=4)  # 9 samples: 5 + 4, no padding
    return AdversarialTrainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        loader,
        attack=pgd_factory(),
        epochs=3,
        num_classes=NUM_CLASSES,
        eval_loader=eval_loader,
        checkpoint_dir=checkpoint_dir,
        progress=False,
        seed=0,
        **kwargs,
    )


def main(out: Path) -> None:
    torch.set_num_threads(1)
    full_model = tiny_model()
    full = _trainer(full_model, out / "full")
    history = full.fit()
    rank = full.rank
    final_state = {k: v.clone() for k, v in full_model.state_dict().items()}

    # Attacking through the DDP wrapper works too: autograd.grad wrt the inputs fires no parameter
    # hook, so no gradient appears and the reducer is left ready for a normal step afterwards.
    data = TinySegmentation(4, seed=3 + rank)
    full.optimizer.zero_grad(set_to_none=True)
    adv = pgd_factory(random_start=False)(full.model)(data.images, data.masks)
    assert adv.shape == data.images.shape and not torch.equal(adv, data.images)
    assert all(p.grad is None for p in full.module.parameters())
    masked_cross_entropy(full.model(adv), data.masks).backward()
    grad = full.module[0].weight.grad.clone()
    gathered = [torch.empty_like(grad) for _ in range(full.world_size)]
    torch.distributed.all_gather(gathered, grad)
    assert all(torch.equal(g, gathered[0]) for g in gathered), "DDP did not average gradients after the attack"

    killed = _trainer(tiny_model(), out / "killed", checkpoint_every=3, callbacks=[KillAt(4)])
    try:
        killed.fit()
        raise AssertionError("the kill callback did not fire")
    except KeyboardInterrupt:
        pass
    resumed_model = tiny_model(seed=123)  # different init: everything must come from the checkpoint
    resumed = _trainer(resumed_model, out / "killed", checkpoint_every=3, resume=True)
    resumed_history = resumed.fit()
    torch.save(
        {
            "world_size": full.world_size,
            "state": final_state,
            "history": history,
            "resumed_state": {k: v.clone() for k, v in resumed_model.state_dict().items()},
            "resumed_history": resumed_history,
        },
        out / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
