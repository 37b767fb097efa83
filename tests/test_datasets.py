"""Tests of segrobust.datasets: CamVid, FolderDataset, SyntheticStreets and the video/triplet views."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import error_reading_fifo
from PIL import Image
from torch import nn

from segrobust.datasets import (
    CAMVID_CLASSES,
    CAMVID_COLORS,
    CamVid,
    CamVidTriplets,
    FolderDataset,
    SyntheticStreets,
    SyntheticStreetTriplets,
    SyntheticStreetVideo,
    build_dataset,
    camera_intrinsics,
    camvid_intrinsics,
    colorize,
    find_triplets,
    parse_frame_name,
    preview_grid,
    relative_pose,
    resize_mask,
    scale_intrinsics,
)
from segrobust.datasets.synthetic.scene import ROAD, SKY

CAMVID_ROOT = Path(os.environ.get("SEGROBUST_CAMVID", Path(__file__).resolve().parents[2] / "shared/data/camvid"))
needs_camvid = pytest.mark.skipif(
    not (CAMVID_ROOT / "train.txt").is_file(),
    reason=f"CamVid not found at {CAMVID_ROOT} (set SEGROBUST_CAMVID to its folder)",
)
SMALL = (48, 64)


@pytest.fixture(scope="module")
def streets() -> SyntheticStreets:
    return SyntheticStreets(n=20, size=SMALL, seed=0)


@pytest.fixture(scope="module")
def triplets() -> SyntheticStreetTriplets:
    return SyntheticStreetTriplets(n=4, size=SMALL, seed=0, noise=False)


# --------------------------------------------------------------------------- functional


def test_palette_and_colorize():
    assert len(CAMVID_CLASSES) == len(CAMVID_COLORS) == 11
    assert CAMVID_CLASSES[3] == "Road" and CAMVID_COLORS[3] == (128, 64, 128)
    mask = torch.tensor([[0, 8, 255], [10, 11, 3]])
    rgb = colorize(mask)
    assert rgb.dtype == torch.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[0, 1].tolist() == list(CAMVID_COLORS[8])
    assert rgb[0, 2].tolist() == [0, 0, 0]  # ignore
    assert rgb[1, 1].tolist() == [0, 0, 0]  # unknown id
    as_numpy = colorize(mask.numpy())
    assert isinstance(as_numpy, np.ndarray) and np.array_equal(as_numpy, rgb.numpy())
    with pytest.raises(TypeError, match="integer"):
        colorize(torch.zeros(2, 2))


def test_resize_mask_keeps_labels_and_intrinsics_scale():
    mask = torch.arange(12).reshape(3, 4).repeat_interleave(8, 0).repeat_interleave(8, 1)
    small = resize_mask(mask, (3, 4))
    assert torch.equal(small, torch.arange(12).reshape(3, 4))
    K = camera_intrinsics((360, 480), 60.0)
    assert torch.allclose(scale_intrinsics(K, (360, 480), (48, 64)), camera_intrinsics((48, 64), 60.0))
    with pytest.raises(TypeError, match="size"):
        camera_intrinsics((48,), 60.0)


def test_relative_pose_is_the_inverse_composition():
    angle = 0.3
    a = torch.eye(4)
    a[:3, :3] = torch.tensor([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    a[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    b = torch.eye(4)
    b[:3, 3] = torch.tensor([0.5, -1.0, 2.0])
    a_to_b = relative_pose(a, b)
    assert torch.allclose(a_to_b, torch.linalg.inv(b) @ a, atol=1e-6)
    assert torch.allclose(a_to_b @ relative_pose(b, a), torch.eye(4), atol=1e-6)


# --------------------------------------------------------------------------- SyntheticStreets


def test_synthetic_items_shapes_dtypes_ranges(streets):
    item = streets[0]
    assert set(item) >= {"image", "mask", "depth", "K", "name"}
    assert item["image"].shape == (3, *SMALL) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["mask"].shape == SMALL and item["mask"].dtype == torch.int64
    assert item["depth"].shape == (1, *SMALL) and item["depth"].dtype == torch.float32
    assert item["K"].shape == (3, 3) and item["K"].dtype == torch.float32
    assert torch.allclose(item["K"], camera_intrinsics(SMALL))
    assert len(streets) == 20 and streets[-1]["name"] == streets[19]["name"]
    with pytest.raises(IndexError):
        streets[20]


def test_synthetic_determinism_and_independence_from_n_and_order(streets):
    again = SyntheticStreets(n=5, size=SMALL, seed=0, cache=False)
    for i in (3, 0):  # a different access order
        assert torch.equal(again[i]["image"], streets[i]["image"])
        assert torch.equal(again[i]["mask"], streets[i]["mask"])
    other_seed = SyntheticStreets(n=1, size=SMALL, seed=1)[0]
    assert not torch.equal(other_seed["image"], streets[0]["image"])
    val = SyntheticStreets(n=1, size=SMALL, seed=0, split="val")[0]
    assert not torch.equal(val["mask"], streets[0]["mask"])


def test_synthetic_cache_returns_copies(streets):
    first = streets[1]
    first["image"].zero_()
    assert float(streets[1]["image"].max()) > 0.0


def test_synthetic_label_coverage(streets):
    counts = torch.zeros(11, dtype=torch.long)
    for i in range(len(streets)):
        mask = streets[i]["mask"]
        assert int(mask.min()) >= 0 and int(mask.max()) <= 10
        counts += torch.bincount(mask.flatten(), minlength=11)
    present = {CAMVID_CLASSES[k] for k in range(11) if counts[k] > 0}
    assert len(present) >= 7, present
    assert {"Sky", "Building", "Pole", "Road", "Pavement", "Tree", "Car", "Pedestrian"} <= present
    # No single class may swallow the images.
    assert counts.max() < 0.6 * counts.sum()


def test_synthetic_depth_positive_and_growing_towards_horizon(streets):
    for i in range(5):
        item = streets[i]
        depth, mask = item["depth"][0], item["mask"]
        assert torch.isfinite(depth).all() and float(depth.min()) > 0
        assert torch.all(depth[mask == SKY] == 100.0)
        assert float(depth[: SMALL[0] // 3].mean()) > float(depth[-SMALL[0] // 3 :].mean())
        # Along each column the road recedes upwards: depth grows from the bottom row up.
        road = mask == ROAD
        rows = [float(depth[r][road[r]].median()) for r in range(SMALL[0] - 1, SMALL[0] // 2, -4) if road[r].sum() > 3]
        assert len(rows) >= 3 and all(a < b for a, b in zip(rows, rows[1:])), rows


def test_synthetic_depth_is_camera_z_of_the_ground_plane():
    data = SyntheticStreets(n=3, size=SMALL, seed=4, noise=False)
    for i in range(3):
        item, scene = data[i], data.scene(i)
        pose, K = scene.camera_to_world(), item["K"]
        v, u = torch.meshgrid(torch.arange(SMALL[0]).float(), torch.arange(SMALL[1]).float(), indexing="ij")
        rays_cam = torch.stack([u, v, torch.ones_like(u)], -1) @ torch.linalg.inv(K).T
        rays_world = rays_cam @ pose[:3, :3].T
        ground_z = (-pose[2, 3] / rays_world[..., 2]).clamp(max=100.0)  # camera-z depth of Z = 0, capped
        road = (item["mask"] == ROAD) & (rays_world[..., 2] < 0)
        assert road.sum() > 100
        assert torch.allclose(item["depth"][0][road], ground_z[road], rtol=1e-3, atol=1e-3)


def test_synthetic_rendering_speed():
    data = SyntheticStreets(n=20, size=(96, 128), seed=3, cache=False)
    start = time.process_time()
    for i in range(len(data)):
        data[i]
    per_image = (time.process_time() - start) / len(data)
    # About 25 ms of CPU per 96x128 image (200 images in ~5 s); generous bound for loaded machines.
    assert per_image < 0.15, per_image


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SyntheticStreets(n=1, split="training")
    with pytest.raises(TypeError, match="size"):
        SyntheticStreets(n=1, size=(96,))
    with pytest.raises(TypeError, match=r"size must be a pair of ints \(H, W\), got 96"):
        SyntheticStreets(n=1, size=96)
    with pytest.raises(ValueError, match="max_depth"):
        SyntheticStreetVideo(num_sequences=1, max_depth=0.0)
    with pytest.raises(ValueError, match="n must"):
        SyntheticStreets(n=-1)
    with pytest.raises(ValueError, match="speed"):
        SyntheticStreetTriplets(n=1, speed=-1.0)


@pytest.fixture()
def one_thread():
    """Small convolutions on a shared 2-core machine run far faster on one intra-op thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_synthetic_streets_are_learnable(one_thread):
    """A tiny conv net trained for 100 steps beats the majority class on held-out scenes."""
    torch.manual_seed(0)
    train = SyntheticStreets(n=48, size=SMALL, seed=0, split="train")
    val = SyntheticStreets(n=12, size=SMALL, seed=0, split="val")
    x = torch.stack([train[i]["image"] for i in range(len(train))])
    y = torch.stack([train[i]["mask"] for i in range(len(train))])
    xv = torch.stack([val[i]["image"] for i in range(len(val))])
    yv = torch.stack([val[i]["mask"] for i in range(len(val))])

    def block(cin: int, cout: int, dilation: int = 1) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(cout), nn.ReLU()
        )

    net = nn.Sequential(
        block(3, 16),
        block(16, 24),
        nn.MaxPool2d(2),
        block(24, 24),
        block(24, 24, 2),
        block(24, 24, 4),
        nn.Upsample(scale_factor=2, mode="bilinear"),
        block(24, 24),
        nn.Conv2d(24, 11, 1),
    )
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(100):
        idx = torch.randint(0, len(x), (8,))
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(xv).argmax(1) == yv).float().mean().item()
    majority = torch.bincount(y.flatten(), minlength=11).argmax()
    baseline = (yv == majority).float().mean().item()
    assert accuracy > baseline + 0.2, (accuracy, baseline)


# --------------------------------------------------------------------------- video and triplets


def _is_rigid(T: torch.Tensor) -> bool:
    R = T[..., :3, :3]
    eye = torch.eye(3).expand_as(R)
    return bool(
        torch.allclose(R @ R.transpose(-1, -2), eye, atol=1e-5)
        and torch.allclose(torch.linalg.det(R), torch.ones(R.shape[:-2]), atol=1e-5)
        and torch.allclose(T[..., 3, :], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand_as(T[..., 3, :]))
    )


def test_triplet_items_and_pose_convention(triplets):
    item = triplets[0]
    assert item["frames"].shape == (3, 3, *SMALL) and item["frames"].dtype == torch.float32
    assert item["mask"].shape == SMALL and item["mask"].dtype == torch.int64
    assert item["depth"].shape == (1, *SMALL) and item["K"].shape == (3, 3)
    assert item["poses"].shape == (2, 4, 4) and _is_rigid(item["poses"])
    # Driving forward 0.8 m per frame: the current camera centre lies 0.8 m ahead
    # (+z) of the previous camera and 0.8 m behind the next one.
    assert item["poses"][0, 2, 3] == pytest.approx(0.8, abs=0.02)
    assert item["poses"][1, 2, 3] == pytest.approx(-0.8, abs=0.02)
    # The current frame equals the still render of the same world and pose.
    assert torch.equal(item["frames"][1], triplets[0]["frames"][1])


def test_triplet_warp_reproduces_the_current_frame(triplets):
    """kornia's warp_frame_depth(prev, depth_cur, T_cur->prev, K) must rebuild the current frame."""
    from kornia.geometry.depth import warp_frame_depth

    warped_err, identity_err, inverted_err, good = [], [], [], []
    for i in range(len(triplets)):
        item = triplets[i]
        frames, depth, poses, K = item["frames"], item["depth"][None], item["poses"], item["K"][None]
        current = frames[1]
        for src, pose in ((0, poses[0]), (2, poses[1])):
            warped = warp_frame_depth(frames[None, src], depth, pose[None], K)[0]
            cover = warp_frame_depth(torch.ones(1, 1, *SMALL), depth, pose[None], K)[0, 0]
            inverted = warp_frame_depth(frames[None, src], depth, torch.linalg.inv(pose)[None], K)[0]
            valid = cover > 0.999  # drops pixels whose point left the source view
            near = valid & (depth[0, 0] < 20.0)  # where the motion is several pixels
            error = (warped - current).abs().mean(0)
            warped_err.append(float(error[near].mean()))
            identity_err.append(float((frames[src] - current).abs().mean(0)[near].mean()))
            inverted_err.append(float((inverted - current).abs().mean(0)[near].mean()))
            good.append(float((error[valid] < 0.05).float().mean()))
    warped_err, identity_err, inverted_err = map(np.mean, (warped_err, identity_err, inverted_err))
    assert min(good) > 0.85, good  # residual errors only at occlusions and object edges
    assert warped_err < 0.5 * identity_err, (warped_err, identity_err)
    assert warped_err < 0.25 * inverted_err, (warped_err, inverted_err)


def test_video_sequences_and_relative_poses():
    video = SyntheticStreetVideo(num_sequences=2, length=4, size=(24, 32), seed=0, speed=(5.0, 10.0))
    seq = video[1]
    assert seq["frames"].shape == (4, 3, 24, 32) and seq["masks"].shape == (4, 24, 32)
    assert seq["depth"].shape == (4, 1, 24, 32) and seq["cam_to_world"].shape == (4, 4, 4)
    assert _is_rigid(seq["cam_to_world"])
    steps = seq["cam_to_world"][1:, 0, 3] - seq["cam_to_world"][:-1, 0, 3]
    assert torch.all(steps > 0.5 - 1e-4) and torch.all(steps < 1.0 + 1e-4)  # 5..10 m/s at 0.1 s
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-4)  # constant speed
    to_next = relative_pose(seq["cam_to_world"][0], seq["cam_to_world"][1])
    assert _is_rigid(to_next) and float(to_next[2, 3]) < 0
    assert torch.equal(video[1]["frames"], seq["frames"])


# --------------------------------------------------------------------------- CamVid (real and fake)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def fake_camvid(tmp_path: Path) -> Path:
    """A tiny CamVid-like folder: sequence A with frames 0, 30, 60, 90 and a far jump, sequence B with one."""
    rng = np.random.default_rng(0)
    names = ["A_00000", "A_00030", "A_00060", "A_00090", "A_09000", "Bx_f00010"]
    lines = []
    for name in names:
        _write_png(tmp_path / "train" / f"{name}.png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        labels = rng.integers(0, 12, (12, 16)).astype(np.uint8)
        _write_png(tmp_path / "trainannot" / f"{name}.png", labels)
        # SegNet's own list files hold absolute paths of another machine.
        lines.append(f"/SegNet/CamVid/train/{name}.png /SegNet/CamVid/trainannot/{name}.png")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_camvid_layout_void_mapping_and_resize(fake_camvid):
    data = CamVid(fake_camvid, "train")
    assert len(data) == 6
    item = data[1]
    raw = np.array(Image.open(fake_camvid / "trainannot" / "A_00030.png"))
    assert item["image"].shape == (3, 12, 16) and item["mask"].dtype == torch.int64
    assert torch.equal(item["mask"] == 255, torch.from_numpy(raw == 11))
    assert torch.equal(item["mask"][raw != 11], torch.from_numpy(raw[raw != 11].astype(np.int64)))
    custom = CamVid(fake_camvid, "train", ignore_index=-100)[1]["mask"]
    assert torch.equal(custom == -100, torch.from_numpy(raw == 11))
    small = CamVid(fake_camvid, "train", size=(6, 8), cache=True)
    assert small[0]["image"].shape == (3, 6, 8) and small[0]["mask"].shape == (6, 8)
    assert torch.equal(small[0]["image"], small[0]["image"]) and set(small[0]["mask"].unique().tolist()) <= set(
        range(11)
    ) | {255}


def test_camvid_clear_errors(tmp_path, fake_camvid):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*SegNet CamVid layout"):
        CamVid(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match=r"val\.txt.*not found.*trainannot"):
        CamVid(fake_camvid, "val")
    (fake_camvid / "train" / "A_00060.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"A_00060\.png"):
        CamVid(fake_camvid, "train")
    with pytest.raises(ValueError, match="ignore_index"):
        CamVid(fake_camvid, "train", ignore_index=3)


def _write_png16(path: Path, labels: np.ndarray) -> None:
    """A 16-bit greyscale PNG (Pillow mode I;16) holding ``labels`` exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint16)).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I") and int(np.array(img).max()) == int(labels.max())


@pytest.mark.parametrize("bad", [77, 200, 12, 256, 300, 65535])
def test_camvid_refuses_undefined_ids_instead_of_void(fake_camvid, bad):
    # issue 22: ids other than 0..11 were silently void, so the mIoU came from the other images.
    labels = np.array(Image.open(fake_camvid / "trainannot" / "A_00030.png")).astype(np.int64)
    labels[3, 4] = bad
    path = fake_camvid / "trainannot" / "A_00030.png"
    (_write_png if bad < 256 else _write_png16)(path, labels.astype(np.uint8 if bad < 256 else np.uint16))
    data = CamVid(fake_camvid, "train")
    assert data[0]["mask"].shape == (12, 16)  # the other files still load
    with pytest.raises(
        ValueError, match=rf"A_00030\.png' holds ids \[{bad}\] that CamVid does not define \(it defines 0\.\.11\)"
    ):
        data[1]


def test_camvid_reads_16_bit_annotations_exactly(fake_camvid):
    path = fake_camvid / "trainannot" / "A_00030.png"
    eight_bit = CamVid(fake_camvid, "train")[1]["mask"]
    _write_png16(path, np.array(Image.open(path)))
    assert torch.equal(CamVid(fake_camvid, "train")[1]["mask"], eight_bit)


@pytest.mark.parametrize("which", ["image", "annotation", "split list"])
def test_camvid_refuses_fifo_files(fake_camvid, which):
    # issue 22: an image file that is a FIFO blocked forever.
    path = {
        "image": fake_camvid / "train" / "A_00030.png",
        "annotation": fake_camvid / "trainannot" / "A_00030.png",
        "split list": fake_camvid / "train.txt",
    }[which]
    error = error_reading_fifo(path, lambda: CamVid(fake_camvid, "train")[1])
    assert isinstance(error, ValueError) and "not a regular file (a FIFO)" in str(error) and str(path) in str(error)


def test_triplet_neighbour_logic(fake_camvid):
    assert parse_frame_name("Bx_f00010") == ("Bx", 10)
    with pytest.raises(ValueError, match="SEQUENCE_FRAME"):
        parse_frame_name("nounderscore")
    data = CamVidTriplets(fake_camvid, "train", size=(6, 8))
    # Only A_00030 and A_00060 have both neighbours within 45 frames (A_09000 is a jump, B is alone).
    assert [data.frames.names[t[1]] for t in data.triplets] == ["A_00030", "A_00060"]
    item = data[1]
    assert item["frames"].shape == (3, 3, 6, 8) and item["frame_gaps"].tolist() == [30, 30]
    assert item["name"] == "A_00060" and "poses" not in item
    assert torch.equal(item["frames"][2], data.frames[3]["image"])
    assert torch.allclose(item["K"], camvid_intrinsics((6, 8)))
    wide = CamVidTriplets(fake_camvid, "train", max_gap=10000)
    assert len(wide) == 3
    assert find_triplets(["s_1", "s_3", "s_2"], max_gap=1) == [(0, 2, 1)]


@needs_camvid
def test_real_camvid_splits():
    train, val = CamVid(CAMVID_ROOT, "train"), CamVid(CAMVID_ROOT, "val", size=(96, 128))
    assert (len(train), len(val)) == (367, 101)
    item = train[0]
    assert item["image"].shape == (3, 360, 480) and item["mask"].shape == (360, 480)
    raw = np.array(Image.open(CAMVID_ROOT / "trainannot" / f"{item['name']}.png"))
    assert (raw == 11).any() and torch.equal(item["mask"] == 255, torch.from_numpy(raw == 11))
    values = set(val[0]["mask"].unique().tolist())
    assert values <= set(range(11)) | {255} and val[0]["image"].shape == (3, 96, 128)


@needs_camvid
def test_real_camvid_triplets():
    train = CamVidTriplets(CAMVID_ROOT, "train", size=(48, 64))
    val = CamVidTriplets(CAMVID_ROOT, "val", size=(48, 64))
    # 3 sequences; 0016E5 is cut by jumps of 1950 and 270 frames: 367 - 2 * 5 = 357.
    assert len(train) == 357 and len(val) == 99
    for data in (train, val):
        for prev, cur, nxt in data.triplets:
            names = [data.frames.names[k] for k in (prev, cur, nxt)]
            (s0, f0), (s1, f1), (s2, f2) = map(parse_frame_name, names)
            assert s0 == s1 == s2 and 0 < f1 - f0 <= 45 and 0 < f2 - f1 <= 45
    assert train[0]["frame_gaps"].tolist() == [30, 30] and val[0]["frame_gaps"].tolist() == [2, 2]


# --------------------------------------------------------------------------- FolderDataset, factory, preview


def _make_folder(root: Path, stems=("a", "b"), size=(10, 14), suffix=".png") -> Path:
    rng = np.random.default_rng(1)
    for stem in stems:
        _write_png(root / "images" / f"{stem}{suffix}", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        _write_png(root / "masks" / f"{stem}.png", rng.integers(0, 3, size).astype(np.uint8))
    return root


def test_folder_dataset(tmp_path):
    root = _make_folder(tmp_path / "data")
    _make_folder(tmp_path / "data", stems=("c",), suffix=".jpg")
    data = FolderDataset(root, size=(5, 7), num_classes=3)
    assert len(data) == 3 and data.names == ["a", "b", "c"]
    item = data[2]
    assert item["image"].shape == (3, 5, 7) and item["mask"].shape == (5, 7) and item["mask"].dtype == torch.int64
    assert int(item["mask"].max()) <= 2
    full = FolderDataset(root)[0]
    raw = np.array(Image.open(root / "masks" / "a.png"))
    assert torch.equal(full["mask"], torch.from_numpy(raw.astype(np.int64)))


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="images"):
        FolderDataset(tmp_path / "missing")
    root = _make_folder(tmp_path / "d")
    (root / "masks" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks/b\.png"):
        FolderDataset(root)
    root = _make_folder(tmp_path / "e")
    _write_png(root / "masks" / "a.png", np.full((10, 14), 7, np.uint8))
    with pytest.raises(ValueError, match=r"values \[7\] outside \[0, 3\)"):
        FolderDataset(root, num_classes=3)[0]
    _write_png(root / "masks" / "a.png", np.zeros((10, 14, 3), np.uint8))
    with pytest.raises(ValueError, match="single-channel"):
        FolderDataset(root)[0]
    _write_png(root / "masks" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="is \\(10, 14\\)"):
        FolderDataset(root)[0]


def test_folder_dataset_keeps_16_bit_ids_and_refuses_fifos(tmp_path):
    root = _make_folder(tmp_path / "d")
    labels = np.zeros((10, 14), np.uint16)
    labels[0, :4] = (300, 1000, 65535, 7)
    _write_png16(root / "masks" / "a.png", labels)
    assert torch.equal(FolderDataset(root)[0]["mask"], torch.from_numpy(labels.astype(np.int64)))
    with pytest.raises(ValueError, match=r"values \[300, 1000, 65535\] outside \[0, 8\)"):
        FolderDataset(root, num_classes=8)[0]
    error = error_reading_fifo(root / "images" / "b.png", lambda: FolderDataset(root)[1])
    assert isinstance(error, ValueError) and "b.png: not a regular file (a FIFO)" in str(error)


def test_resize_mask_keeps_ids_beyond_float32_precision():
    mask = torch.tensor([[2**24 + 1, 3], [5, 2**31 - 1]])
    assert torch.equal(resize_mask(mask, (4, 4)), mask.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_build_dataset(tmp_path, fake_camvid):
    synthetic = build_dataset("synthetic", split="val", size=(12, 16), n=2)
    assert isinstance(synthetic, SyntheticStreets) and len(synthetic) == 2 and synthetic.split == "val"
    assert len(build_dataset("synthetic", split="val", size=(12, 16))) == 50
    assert isinstance(build_dataset("synthetic_triplets", size=(12, 16), n=1), SyntheticStreetTriplets)
    assert len(build_dataset("camvid", root=fake_camvid, split="train", size=(6, 8))) == 6
    assert len(build_dataset("camvid-triplets", root=fake_camvid, split="train")) == 2
    _make_folder(tmp_path / "mine" / "val", stems=("x",))
    assert build_dataset("folder", root=tmp_path / "mine", split="val")[0]["name"] == "x"
    with pytest.raises(ValueError, match="unknown data set 'kitti'"):
        build_dataset("kitti")
    with pytest.raises(ValueError, match="'cityscapes' data set needs root"):
        build_dataset("cityscapes")
    with pytest.raises(ValueError, match="takes no root"):
        build_dataset("synthetic", root=tmp_path)


def test_preview_grid_shape(streets):
    grid = preview_grid(streets, n=4, columns=2)
    assert grid.dtype == np.uint8 and grid.shape == (2 * SMALL[0], 2 * 3 * SMALL[1] + 4, 3)


def test_cached_pairs_are_read_once_and_match_uncached(tmp_path, monkeypatch):
    from segrobust.datasets import _image_files

    root = _make_folder(tmp_path / "data")
    uncached = FolderDataset(root, size=(5, 7))
    cached = FolderDataset(root, size=(5, 7), cache=True)
    reads = []
    real_load_rgb = _image_files.load_rgb
    monkeypatch.setattr(_image_files, "load_rgb", lambda path: reads.append(path) or real_load_rgb(path))
    first, second = cached[1], cached[1]
    assert len(reads) == 1
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["mask"], second["mask"])
    reference = uncached[1]
    # The cache stores uint8, so cached images differ from the float resize by at most half a grey level.
    assert (first["image"] - reference["image"]).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(first["mask"], reference["mask"])
