"""Depth multi-task defence (SGDepth): wrap an smp Unet, train jointly, deploy and attack it.

    python examples/depth_multitask.py --fast

1. Wrap ``smp.Unet`` in :class:`segrobust.defenses.DepthMultiTask`: a depth
   decoder + disparity head on the Unet's encoder, with gradient scaling
   (depth 0.9, segmentation 0.1) where each task enters the encoder.
2. A few joint steps on procedural street video: cross-entropy on the labelled
   current frame + the self-supervised monodepth2 loss on (previous, current,
   next) frames (known poses, or a PoseNet with ``--pose-net``).
3. ``.eval()`` turns the wrapper into an ordinary segmentation model (plain
   logits, the depth branch is dropped): attack it with NAA.
"""

from __future__ import annotations

import argparse
import time

import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader

from segrobust.defenses import DepthLoss, DepthMultiTask, PoseNet, depth_multitask_loss
from segrobust.defenses.depth import median_scaled_abs_rel, multitask_inputs
from segrobust.metrics import ConfusionMatrix


def triplet_data(n: int, size: tuple[int, int], seed: int):
    """Procedural street triplets ``{"frames", "mask", "depth", "K", "poses", "name"}`` from segrobust.datasets."""
    try:
        from segrobust.datasets import SyntheticStreetTriplets
    except ImportError:  # the data package before it re-exports its classes
        from segrobust.datasets.synthetic import SyntheticStreetTriplets

    return SyntheticStreetTriplets(n, size=size, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, a few steps (seconds)")
    parser.add_argument("--steps", type=int, default=None, help="joint training steps")
    parser.add_argument(
        "--pose-net", action="store_true", help="predict poses with a PoseNet instead of using the known ones"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    def to_device(batch: dict) -> dict:
        return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}

    size = (48, 64) if args.fast else (96, 128)
    steps = args.steps if args.steps is not None else (6 if args.fast else 300)
    train_set = triplet_data(8 if args.fast else 256, size, seed=args.seed)
    test_set = triplet_data(4 if args.fast else 32, size, seed=args.seed + 1)
    loader = DataLoader(train_set, batch_size=4, shuffle=True, drop_last=True)
    test = to_device(next(iter(DataLoader(test_set, batch_size=len(test_set)))))
    num_classes = 11  # the CamVid classes the procedural streets are labelled with

    if args.fast:
        net = smp.Unet(
            "resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=num_classes
        )
    else:
        net = smp.Unet("resnet18", encoder_weights=None, classes=num_classes)
    # initial_depth: start the depth branch at a typical street depth (see the DepthMultiTask docs)
    model = DepthMultiTask(
        net, depth_grad_scale=0.9, seg_grad_scale=0.1, min_depth=1.0, max_depth=100.0, initial_depth=10.0
    )
    depth_loss = DepthLoss(
        pose_net=PoseNet() if args.pose_net else None,
        min_depth=1.0,
        max_depth=100.0,
        use_known_poses=not args.pose_net,
    )
    model.to(device)
    depth_loss.to(device)
    optimiser = torch.optim.Adam([*model.parameters(), *depth_loss.parameters()], lr=3e-3 if args.fast else 1e-3)

    def depth_error() -> float:
        with torch.no_grad():
            model.eval()
            depth = model.predict_depth(test["frames"][:, 1])
        return float(median_scaled_abs_rel(depth, test["depth"].reshape(depth.shape)))

    print(
        f"DepthMultiTask(Unet-resnet18), {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, images {size}"
    )
    print(f"depth abs-rel before training (median-scaled): {depth_error():.3f}")
    model.train()
    step, start = 0, time.time()
    while step < steps:
        for batch in map(to_device, loader):
            output = model(multitask_inputs(batch))  # training mode: (segmentation, disparity, ...)
            terms = depth_multitask_loss(output, batch, depth_loss=depth_loss)
            optimiser.zero_grad()
            terms.total.backward()
            optimiser.step()
            step += 1
            print(
                f"step {step:3d}  loss {float(terms.total.detach()):.4f}  "
                f"seg CE {float(terms.segmentation.detach()):.4f}  depth {float(terms.depth.detach()):.4f}"
            )
            if step >= steps:
                break
    print(f"{steps} joint steps in {time.time() - start:.1f} s")
    print(f"depth abs-rel after training (median-scaled): {depth_error():.3f}")

    # ---- deployment: eval() is an ordinary segmentation model
    model.eval()
    images, masks = test["frames"][:, 1], test["mask"]
    with torch.no_grad():
        logits = model(images)
        assert torch.equal(logits, model.segmentation_model()(images))
    print(f"eval() output: logits {tuple(logits.shape)} (same as model.segmentation_model())")

    def scores(x: torch.Tensor):
        matrix = ConfusionMatrix(num_classes, ignore_index=255, device=device)
        with torch.no_grad():
            matrix.update(model(x), masks)
        return matrix.compute()

    clean = scores(images)
    print(f"clean:       mIoU {clean.miou:.3f}  pixel accuracy {clean.pixel_accuracy:.3f}")
    try:
        from segrobust.attacks import NAA
    except ImportError:
        print("segrobust.attacks.NAA is not available: attack skipped")
        return
    attack = NAA(model, eps=8 / 255, alpha=None, steps=2 if args.fast else 20)
    adversarial = attack(images, masks)
    attacked = scores(adversarial)
    print(f"NAA 8/255:   mIoU {attacked.miou:.3f}  pixel accuracy {attacked.pixel_accuracy:.3f}")
    assert not model.training, "the attack must leave the model in eval mode"


if __name__ == "__main__":
    main()
