"""Datasets, joint transforms and the pre-flight scan, on real CamVid / VOC files and bad copies of them."""

from __future__ import annotations

import json
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab import cli
from deeplab.cli import check_data
from deeplab.data.checks import DataCheckError, check_dataset, scan_dataset
from deeplab.data.datasets import (CAMVID_CLASSES, VOC_CLASSES, camvid_dataset, cityscapes_dataset,
                                   folder_dataset, voc_colormap, voc_dataset)
from deeplab.data.io import read_image
from deeplab.data.transforms import (Normalize, PhotometricJitter, RandomCrop, RandomHorizontalFlip,
                                     RandomRotate, RandomScale, ToTensor, Compose, rotate_pair, train_transforms)

IGNORE = 255
# SegNet's published median-frequency weights for CamVid train, classes 0..10 (../shared/data/README.md)
SEGNET_WEIGHTS = [0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823, 6.2478, 7.3614]


@pytest.fixture(scope="module")
def voc_root(shared_data: Path) -> Path:
    return shared_data / "voc2012_val_dev"


def _voc_ids(voc_root: Path, n: int) -> list[str]:
    return (voc_root / "val_dev.txt").read_text().split()[:n]


def _copy_voc(voc_root: Path, folder: Path, n: int) -> tuple[Path, Path]:
    """A folder dataset (images/, masks/) of n real VOC pairs."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True), masks.mkdir(parents=True)
    for i in _voc_ids(voc_root, n):
        shutil.copy(voc_root / "JPEGImages" / f"{i}.jpg", images)
        shutil.copy(voc_root / "SegmentationClass" / f"{i}.png", masks)
    return images, masks


# ------------------------------------------------------------------------------------------ datasets
def test_camvid_lengths_shapes_and_void_to_ignore(shared_data: Path) -> None:
    assert len(camvid_dataset(shared_data / "camvid", "train")) == 367
    val = camvid_dataset(shared_data / "camvid", "val")
    assert len(val) == 101 and val.info.classes == CAMVID_CLASSES and val.info.ignore_index == IGNORE
    sample = val.read(0)
    assert sample.image.shape == (360, 480, 3) and sample.image.dtype == np.uint8
    assert sample.label.shape == (360, 480) and sample.label.dtype == np.int64
    void = sample.raw_label == 11
    assert void.any() and (sample.label[void] == IGNORE).all() and 11 not in sample.label
    assert (sample.label[~void] == sample.raw_label[~void]).all()
    image, label = val[0]
    assert image.shape == (3, 360, 480) and image.dtype == torch.float32 and label.dtype == torch.int64
    with pytest.raises(ValueError, match="test"):  # the held-out test split is not in the shared copy
        camvid_dataset(shared_data / "camvid", "test")


def test_voc_dev_reads_palette_indices(voc_root: Path) -> None:
    dev = voc_dataset(voc_root, "val_dev.txt")
    assert len(dev) == 100 and len(voc_dataset(voc_root, voc_root / "val_dev.txt")) == 100
    assert len(voc_dataset(voc_root, "val_dev")) == 100 and dev.info.classes == VOC_CLASSES
    seen: set[int] = set()
    for index in range(4):
        sample = dev.read(index)
        assert sample.label.shape == sample.image.shape[:2]
        values = set(np.unique(sample.label).tolist())
        assert values <= set(range(21)) | {IGNORE}
        stored = np.asarray(Image.open(sample.mask_path))  # P-mode indices, never convert("L")
        assert (sample.label == stored).all()
        seen |= values
    assert IGNORE in seen and len(seen - {0, IGNORE}) >= 1
    assert voc_colormap()[IGNORE] == (224, 224, 192) and dev.info.palette[15] == (192, 128, 128)


def test_voc_imagesets_aug_and_rgb_masks(voc_root: Path, tmp_path: Path) -> None:
    ids = _voc_ids(voc_root, 2)
    for name in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (tmp_path / name).mkdir(parents=True)
    for i in ids:
        shutil.copy(voc_root / "JPEGImages" / f"{i}.jpg", tmp_path / "JPEGImages")
        mask = Image.open(voc_root / "SegmentationClass" / f"{i}.png")
        mask.convert("RGB").save(tmp_path / "SegmentationClass" / f"{i}.png")  # RGB-coded through the VOC palette
        Image.fromarray(np.asarray(mask)).save(tmp_path / "SegmentationClassAug" / f"{i}.png")  # SBD: gray indices
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    (tmp_path / "ImageSets/Segmentation/trainaug.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in ids))
    val, aug = voc_dataset(tmp_path, "val"), voc_dataset(tmp_path, "trainaug")
    assert aug.pairs[0][1].parent.name == "SegmentationClassAug"
    expected = np.asarray(Image.open(voc_root / "SegmentationClass" / f"{ids[0]}.png"))
    assert (val.read(0).label == expected).all() and (aug.read(0).label == expected).all()
    assert IGNORE in expected  # the boundary colour (224, 224, 192) decodes to the ignore value
    with pytest.raises(ValueError, match="no split list for 'train'.*ImageSets"):
        voc_dataset(tmp_path, "train")
    (tmp_path / "ImageSets/Segmentation/extra.txt").write_text(ids[0] + "\n2099_000001\n")
    with pytest.raises(ValueError, match=r"1 of 2 ids.*<id>\.jpg.*2099_000001"):
        voc_dataset(tmp_path, "extra")


def test_cityscapes_label_ids_to_train_ids(shared_data: Path, tmp_path: Path) -> None:
    image = shared_data / "camvid" / "val" / sorted((shared_data / "camvid" / "val").iterdir())[0].name
    for city in ("aachen", "bochum"):
        (tmp_path / "leftImg8bit/train" / city).mkdir(parents=True)
        (tmp_path / "gtFine/train" / city).mkdir(parents=True)
        stem = f"{city}_000000_000019"
        shutil.copy(image, tmp_path / "leftImg8bit/train" / city / f"{stem}_leftImg8bit.png")
        ids = np.array([[7, 8, 26, 33], [0, 4, 9, 23]], dtype=np.uint8).repeat(180, 0).repeat(120, 1)
        Image.fromarray(ids).save(tmp_path / "gtFine/train" / city / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(ids).save(tmp_path / "gtFine/train" / city / f"{stem}_gtFine_instanceIds.png")
    ds = cityscapes_dataset(tmp_path, "train")
    assert len(ds) == 2 and ds.info.num_classes == 19
    label = ds.read(0).label
    assert label[0, ::120].tolist() == [0, 1, 13, 18] and label[-1, ::120].tolist() == [255, 255, 255, 10]
    shutil.copy(image, tmp_path / "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png")
    with pytest.raises(ValueError, match="1 of 3 images.*aachen_000001_000019_leftImg8bit.png"):
        cityscapes_dataset(tmp_path, "train")


def test_folder_layout_errors(voc_root: Path, tmp_path: Path) -> None:
    images, masks = _copy_voc(voc_root, tmp_path / "ok", 3)
    classes = VOC_CLASSES
    assert len(folder_dataset(images, masks, classes=classes)) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no images matching.*it is empty"):
        folder_dataset(tmp_path / "empty", masks, classes=classes)
    with pytest.raises(ValueError, match="does not exist"):
        folder_dataset(tmp_path / "nowhere", masks, classes=classes)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no images matching \*\.jpg.*1 other file\(s\): a\.txt"):
        folder_dataset(tmp_path / "texts", masks, classes=classes)
    stray = masks / "zz_orphan.png"
    shutil.copy(next(masks.iterdir()), stray)
    with pytest.raises(ValueError, match=r"1 of 4 masks in .*masks.*<stem>\.\{jpg.*zz_orphan\.png"):
        folder_dataset(images, masks, classes=classes)
    stray.unlink()
    (masks / f"{_voc_ids(voc_root, 1)[0]}.png").unlink()
    with pytest.raises(ValueError, match=rf"1 of 3 images.*{_voc_ids(voc_root, 1)[0]}\.jpg"):
        folder_dataset(images, masks, classes=classes)
    with pytest.raises(ValueError, match="split list file does not exist"):
        folder_dataset(images, masks, tmp_path / "missing.txt", classes=classes)
    (masks / "lossy.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="JPEG mask.*lossy.jpg"):
        folder_dataset(images, masks, classes=classes)


# ---------------------------------------------------------------------------------------- transforms
def test_random_scale_never_interpolates_labels(shared_data: Path) -> None:
    sample = camvid_dataset(shared_data / "camvid", "val").read(1)
    before = set(np.unique(sample.label).tolist())
    generator = torch.Generator().manual_seed(0)
    scale = RandomScale(0.5, 2.0, generator=generator)
    sizes = set()
    for _ in range(4):
        image, label = scale(sample.image, sample.label)
        assert image.shape[:2] == label.shape and image.dtype == np.uint8
        assert set(np.unique(label).tolist()) <= before
        sizes.add(label.shape)
        assert 0.5 * 360 - 1 <= label.shape[0] <= 2.0 * 360 + 1
    assert len(sizes) == 4


def test_crop_pads_label_with_ignore_and_image_with_zero() -> None:
    rng = np.random.default_rng(0)
    image = Normalize()(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), None)[0]
    label = rng.integers(0, 5, (10, 12))
    out_image, out_label = RandomCrop((16, 20), ignore_index=IGNORE)(image, label)
    assert out_image.shape == (16, 20, 3) and out_label.shape == (16, 20)
    assert (out_label[:10, :12] == label).all() and (out_image[:10, :12] == image).all()
    padded = np.ones((16, 20), dtype=bool)
    padded[:10, :12] = False
    assert (out_label[padded] == IGNORE).all() and (out_image[padded] == 0).all()
    big, big_label = RandomCrop(4)(image, label)  # a crop of a larger input is a window of it
    assert big.shape == (4, 4, 3) and set(np.unique(big_label).tolist()) <= set(range(5))


def test_flip_moves_image_and_label_together(shared_data: Path) -> None:
    sample = camvid_dataset(shared_data / "camvid", "val").read(0)
    image, label = RandomHorizontalFlip(p=1.0)(sample.image, sample.label)
    width = sample.image.shape[1]
    for y, x in [(10, 3), (200, 100), (359, 479)]:
        assert (image[y, width - 1 - x] == sample.image[y, x]).all()
        assert label[y, width - 1 - x] == sample.label[y, x]
    kept = RandomHorizontalFlip(p=0.0)(sample.image, sample.label)
    assert (kept[0] == sample.image).all()


def test_rotation_known_answers_on_a_real_frame(shared_data: Path) -> None:
    sample = camvid_dataset(shared_data / "camvid", "val").read(0)
    image, label = sample.image[:300, 60:360].copy(), sample.label[:300, 60:360].copy()  # square: 90° is exact
    quarter, quarter_label = rotate_pair(image, label, 90.0)
    assert np.array_equal(quarter, np.rot90(image)) and np.array_equal(quarter_label, np.rot90(label))
    same, same_label = rotate_pair(image, label, 0.0)
    assert np.array_equal(same, image) and np.array_equal(same_label, label)

    fill = (124, 116, 104)
    tilted, tilted_label = rotate_pair(sample.image, sample.label, 30.0, fill, IGNORE)
    assert tilted.shape == sample.image.shape and tilted_label.shape == sample.label.shape
    assert tilted_label.dtype == sample.label.dtype
    assert tilted_label[0, 0] == IGNORE and tuple(tilted[0, 0]) == fill  # an uncovered corner
    assert tilted_label[180, 240] == sample.label[180, 240]  # the centre stays put
    kept = tilted_label != IGNORE
    assert set(np.unique(tilted_label[kept])) <= set(np.unique(sample.label))  # nearest: no invented classes
    assert 0.7 < kept.mean() < 0.95  # a 30° turn of a 4:3 frame uncovers its corners, not more
    # a point at (dy, dx) from the centre lands, turned 30° anticlockwise, on the same class (a grid of them;
    # a few may fall on a class boundary), and the turn the other way does not map them so
    a = np.deg2rad(30.0)
    grid = [(dy, dx) for dy in range(-100, 101, 20) for dx in range(-150, 151, 25)]

    def agreement(sign: float) -> float:
        hits = [tilted_label[180 + round(-dx * np.sin(sign * a) + dy * np.cos(a)),
                             240 + round(dx * np.cos(a) + dy * np.sin(sign * a))] == sample.label[180 + dy, 240 + dx]
                for dy, dx in grid]
        return float(np.mean(hits))

    assert agreement(1.0) > 0.95 and agreement(-1.0) < 0.9
    generator = torch.Generator().manual_seed(3)
    rotate = RandomRotate(10.0, fill, IGNORE, generator=generator)
    a1, l1 = rotate(sample.image, sample.label)
    generator.manual_seed(3)
    a2, l2 = rotate(sample.image, sample.label)
    assert np.array_equal(a1, a2) and np.array_equal(l1, l2) and not np.array_equal(l1, sample.label)
    with pytest.raises(ValueError, match="rotation range"):
        RandomRotate(0.0)
    with pytest.raises(TypeError, match="uint8"):
        rotate(sample.image.astype(np.float32), sample.label)
    with_rotation = train_transforms(crop_size=(96, 128), ignore_index=IGNORE, rotate_degrees=10.0)
    assert "RandomRotate(10.0, fill=(124, 116, 104)" in repr(with_rotation)  # ImageNet's mean pixel
    assert "RandomRotate" not in repr(train_transforms(crop_size=(96, 128), ignore_index=IGNORE))


def test_train_transforms_are_deterministic_per_seed(shared_data: Path) -> None:
    sample = camvid_dataset(shared_data / "camvid", "val").read(2)
    transform = train_transforms(crop_size=(96, 128), ignore_index=IGNORE, jitter=True)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        return transform(sample.image, sample.label)

    (a, la), (b, lb), (c, _) = run(0), run(0), run(1)
    assert a.shape == (3, 96, 128) and la.shape == (96, 128) and la.dtype == torch.int64
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    full, full_label = Compose([Normalize(), ToTensor()])(sample.image, sample.label)
    assert full.shape == (3, 360, 480) and torch.equal(full_label, torch.from_numpy(sample.label))
    jittered, same = PhotometricJitter(0.4, 0.4, 0.4)(sample.image, sample.label)
    assert jittered.dtype == np.uint8 and same is sample.label and not (jittered == sample.image).all()


def test_dataloader_workers_reproducible(shared_data: Path) -> None:
    val = camvid_dataset(shared_data / "camvid", "val").subset(range(4))
    val.transform = train_transforms(crop_size=64, ignore_index=IGNORE)

    def batches(seed: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(val, batch_size=1, num_workers=2,
                                             generator=torch.Generator().manual_seed(seed))
        return [image for image, _ in loader]

    first, second = batches(0), batches(0)
    assert all(torch.equal(x, y) for x, y in zip(first, second))


# ---------------------------------------------------------------------------------------- bad input
def _bomb_png(path: Path, side: int = 20000) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


@pytest.fixture
def bad_folder(voc_root: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """Real VOC copies, some made bad: returns (images, masks, {bad stem: expected message fragment})."""
    root = tmp_path / "bad data ü"
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True), masks.mkdir()
    jpg = voc_root / "JPEGImages" / f"{_voc_ids(voc_root, 1)[0]}.jpg"
    png = voc_root / "SegmentationClass" / f"{_voc_ids(voc_root, 1)[0]}.png"
    photo, mask = Image.open(jpg), Image.open(png)
    indices = np.asarray(mask)

    def pair(stem: str, image_suffix: str = ".jpg") -> tuple[Path, Path]:
        shutil.copy(png, masks / f"{stem}.png")
        return images / f"{stem}{image_suffix}", masks / f"{stem}.png"

    shutil.copy(jpg, pair("good")[0])
    for mode in ("RGBA", "LA", "P"):
        photo.convert(mode).save(pair(f"mode {mode}", ".png")[0])
    photo.convert("CMYK").save(pair("mode CMYK")[0])
    ramp = np.tile(np.linspace(0, 65535, photo.width).astype(np.uint16), (photo.height, 1))
    Image.fromarray(ramp).save(pair("ramp16", ".png")[0])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": store the pixels turned the other way
    photo.transpose(Image.Transpose.ROTATE_90).save(pair("exif rotated")[0], exif=exif)

    bad = {"truncated": "truncated", "zero bytes": "empty file", "text": "not a readable image",
           "bomb": "exceeds", "size mismatch": "differs from image", "out of range": "label values {30}",
           "binary": "binary 0/255", "rgb mask": "RGB-coded mask", "label16": "label values {300}",
           "exif unrotated mask": "EXIF rotation"}
    data = jpg.read_bytes()
    pair("truncated")[0].write_bytes(data[: len(data) // 2])
    pair("zero bytes")[0].write_bytes(b"")
    pair("text")[0].write_text("this is not a JPEG\n")
    _bomb_png(pair("bomb", ".png")[0])
    shutil.copy(jpg, pair("size mismatch")[0])
    mask.crop((0, 0, mask.width - 1, mask.height)).save(masks / "size mismatch.png")
    for stem in ("out of range", "binary", "rgb mask", "label16", "exif unrotated mask"):
        shutil.copy(jpg, pair(stem)[0])
    wrong = indices.copy()
    wrong[:5, :5] = 30
    wrong_mask = Image.fromarray(wrong.astype(np.uint8), "P")
    wrong_mask.putpalette(mask.getpalette())  # VOC colours are distinct, so Pillow keeps the indices
    wrong_mask.save(masks / "out of range.png")
    Image.fromarray(np.where(indices > 0, 255, 0).astype(np.uint8)).save(masks / "binary.png")
    mask.convert("RGB").save(masks / "rgb mask.png")
    wide = indices.astype(np.uint16)
    wide[-5:, -5:] = 300  # a uint8 cast would wrap this to 44, a valid class
    Image.fromarray(wide).save(masks / "label16.png")
    photo.transpose(Image.Transpose.ROTATE_90).save(images / "exif unrotated mask.jpg", exif=exif)
    mask.transpose(Image.Transpose.ROTATE_90).save(masks / "exif unrotated mask.png")
    return images, masks, bad


def test_image_modes_become_three_channel_and_16_bit_rescaled(bad_folder) -> None:
    images, _, _ = bad_folder
    for name in ("mode RGBA.png", "mode LA.png", "mode P.png", "mode CMYK.jpg", "ramp16.png"):
        image = read_image(images / name)
        assert image.shape == (375, 500, 3) and image.dtype == np.uint8, name
    ramp = read_image(images / "ramp16.png")[0, :, 0].astype(int)
    assert ramp[0] <= 1 and ramp[-1] >= 254 and abs(ramp.mean() - 127.5) < 2
    assert (ramp == 255).mean() < 0.01  # convert("RGB") would make it 99.6 % white
    rotated = read_image(images / "exif rotated.jpg")
    assert rotated.shape == (375, 500, 3)  # the displayed size, not the stored 500x375 pixels
    original = read_image(images / "good.jpg").astype(int)
    assert np.abs(rotated.astype(int) - original).mean() < 8  # the same picture, up to JPEG re-encoding


def test_scan_lists_every_bad_file_and_skips_on_request(bad_folder) -> None:
    images, masks, bad = bad_folder
    dataset = folder_dataset(images, masks, classes=VOC_CLASSES)
    start = time.perf_counter()
    report = scan_dataset(dataset, progress=False)
    assert time.perf_counter() - start < 30  # the 20000x20000 bomb is refused from its header
    assert not report.ok and not report.usable
    messages = {Path(path).stem: message for path, message in report.problems}
    for stem, fragment in bad.items():
        assert stem in messages and fragment in messages[stem], (stem, messages.get(stem))
    assert "44" not in messages["label16"] and "16-bit" in messages["label16"]
    mismatch = next(m for p, m in report.problems if Path(p).stem == "size mismatch")
    assert "499x375" in mismatch and "500x375" in mismatch and "size mismatch.jpg" in mismatch
    assert set(messages) == set(bad)  # the mode, 16-bit and EXIF images are fine
    assert any("EXIF orientation 6" in m for p, m in report.notes if Path(p).stem == "exif rotated")
    assert "error:" in report.format() and "--skip-bad" in report.format()

    skipping = scan_dataset(dataset, skip_bad=True, progress=False)
    assert skipping.usable and skipping.skipped == len(bad) and len(skipping.good_indices) == len(dataset) - len(bad)
    kept = {dataset.pairs[i][0].stem for i in skipping.good_indices}
    assert "good" in kept and "exif rotated" in kept and not kept & set(bad)
    assert f"skipping {len(bad)} bad sample(s)" in skipping.format()
    with pytest.raises(DataCheckError, match="problem"):
        check_dataset(dataset, progress=False, log=lambda _: None)
    good, _ = check_dataset(dataset, skip_bad=True, progress=False, log=lambda _: None)
    assert len(good) == len(dataset) - len(bad)
    image, label = good[0]
    assert image.shape[0] == 3 and label.ndim == 2


def test_median_frequency_weights_known_answer(tmp_path: Path) -> None:
    images, masks = tmp_path / "img", tmp_path / "lbl"
    images.mkdir(), masks.mkdir()
    for name, values in {"a": [[0, 0], [1, 255]], "b": [[0, 2], [2, 2]]}.items():
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(images / f"{name}.png")
        Image.fromarray(np.array(values, np.uint8)).save(masks / f"{name}.png")
    report = scan_dataset(folder_dataset(images, masks, classes=["x", "y", "z"]), progress=False)
    # freq: x 3/8, y 1/4, z 3/4 (pixels / pixels of the images holding the class); median 3/8
    assert report.ok and report.histogram.tolist() == [3, 1, 3] and report.ignore_pixels == 1
    assert report.class_weights() == pytest.approx([1.0, 1.5, 0.5])


def test_camvid_train_histogram_and_segnet_weights(shared_data: Path) -> None:
    report = scan_dataset(camvid_dataset(shared_data / "camvid", "train"), progress=False)
    assert report.ok
    total = report.histogram.sum() + report.ignore_pixels
    fractions = dict(zip(CAMVID_CLASSES, (report.histogram / total).tolist()))
    assert fractions["Road"] == pytest.approx(0.317, abs=0.002) and report.ignore_pixels / total == pytest.approx(0.040, abs=0.002)
    ratios = np.array(report.class_weights()) / SEGNET_WEIGHTS
    # Within 25 % of SegNet's published weights for 10 of 11 classes. SignSymbol comes out 3.85 vs 9.64: it
    # occurs in 351 of 367 frames here, so SegNet's label files must have held ~2.5x fewer SignSymbol pixels.
    others = [r for name, r in zip(CAMVID_CLASSES, ratios) if name != "SignSymbol"]
    assert all(0.9 < r < 1.25 for r in others), ratios


# --------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def deeplab_main():
    assert check_data in cli.SUBCOMMANDS
    return cli.main


def test_cli_exit_codes(deeplab_main, bad_folder, voc_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report dir" / "scan.json"
    assert deeplab_main(["check-data", "--dataset", "voc", "--root", str(voc_root), "--split", "val_dev.txt",
                         "--json", str(out), "--no-progress"]) == 0
    assert "ok: no problems found" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["ok"] and saved["samples"] == 100 and set(saved["classes"]) == set(VOC_CLASSES)
    images, masks, bad = bad_folder
    folder = ["check-data", "--dataset", "folder", "--images", str(images), "--masks", str(masks),
              "--classes", ",".join(VOC_CLASSES), "--no-progress"]
    assert deeplab_main(folder) == 1
    printed = capsys.readouterr().out
    assert all(stem in printed for stem in bad)
    assert deeplab_main([*folder, "--skip-bad"]) == 0
    assert deeplab_main(["check-data", "--dataset", "folder", "--images", str(images)]) == 2
    assert "needs images and masks" in capsys.readouterr().err
    assert deeplab_main(["check-data", "--dataset", "camvid", "--root", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
