"""The device-side image path (data.decode: device) against torchvision: the same crop draws for the same seed, the
same pixels for the same window, timm's evaluation crop, and a whole epoch through the loader (on the CPU here; the
nvJPEG call itself needs CUDA and runs in bench/gpu.sh)."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop, v2

from kdcli.data.device_images import (
    EncodedFiles,
    augment,
    centre_crop,
    collate,
    crop_params,
    decode,
    draw_seed,
    resized_crop,
)
from kdcli.data.loaders import DeviceDecodeLoader
from kdcli.errors import UsageError


@pytest.mark.parametrize(("height", "width"), [(120, 90), (64, 64), (30, 200)])
def test_crop_draws_are_torchvisions_for_the_same_seed(height: int, width: int) -> None:
    image = torch.zeros(3, height, width)
    for seed in range(20):
        torch.manual_seed(seed)
        expected = RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
        assert crop_params(height, width, torch.Generator().manual_seed(seed)) == expected


def test_the_window_resized_is_torchvisions_resized_crop() -> None:
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = resized_crop(image, 5, 11, 30, 41, 24)
    theirs = v2.functional.resized_crop(image.float(), 5, 11, 30, 41, [24, 24], antialias=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-3)
    assert torch.equal(resized_crop(image, 5, 11, 30, 41, 24).flip(-1), v2.functional.hflip(ours))


def test_the_evaluation_crop_is_timms() -> None:
    from timm.data import create_transform

    pixels = torch.randint(0, 256, (60, 90, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    picture = Image.fromarray(pixels.numpy())
    timm_eval = create_transform(32, use_prefetcher=True)  # resize 36 on the shorter side, centre crop 32, uint8
    expected = torch.as_tensor(timm_eval(picture)).float()
    ours = centre_crop(pixels.permute(2, 0, 1).contiguous(), 32)
    assert ours.shape == expected.shape == (3, 32, 32)
    # PIL resizes uint8 with its own filter arithmetic; torch in float: the same picture within rounding
    assert (ours - expected).abs().mean() < 1.5


def folder(root: Path) -> list[tuple[Path, int]]:
    samples = []
    for label, value in enumerate((200, 30)):
        for i in range(5):
            path = root / f"{label}-{i}.jpg"
            Image.new("RGB", (40 + 4 * i, 30), (value, value - i, value)).save(path, quality=95)
            samples.append((path, label))
    (root / "odd.png").parent.mkdir(exist_ok=True)
    Image.new("RGB", (20, 20), (200, 200, 200)).save(root / "odd.png")  # not a JPEG: decoded on the host
    samples.append((root / "odd.png", 0))
    return samples


def test_an_epoch_on_the_device_path_repeats_with_the_seed_and_keeps_labels_with_images(tmp_path: Path) -> None:
    dataset = EncodedFiles(folder(tmp_path))

    def epoch(loader_epoch: int, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = DeviceDecodeLoader(dataset, 16, batch_size=4, device=torch.device("cpu"), shuffle=True,
                                    workers=workers, seed=3)  # fmt: skip
        loader.set_epoch(loader_epoch)
        return list(loader)

    first = epoch(0, 0)
    assert [images.shape for images, _ in first] == [(4, 3, 16, 16)] * 2 + [(3, 3, 16, 16)]
    for images, labels in first:
        assert images.min() >= 0 and images.max() <= 1
        bright = images.mean(dim=(1, 2, 3)) > 0.5
        assert torch.equal(bright, labels == 0)  # each image stays with its label
    again = epoch(0, 2)  # in worker processes: the same batches
    assert all(torch.equal(a, b) and torch.equal(x, y) for (a, x), (b, y) in zip(first, again, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, epoch(1, 0), strict=True))


def test_each_image_is_cropped_the_same_whichever_rank_loads_it(tmp_path: Path) -> None:
    """The crops are keyed by (seed, epoch, image), so two ranks together crop every image as one process does."""
    dataset = EncodedFiles(folder(tmp_path))

    def crops(shard: tuple[int, int]) -> dict[int, torch.Tensor]:
        loader = DeviceDecodeLoader(dataset, 16, batch_size=4, device=torch.device("cpu"), shuffle=True, workers=0,
                                    seed=3, shard=shard)  # fmt: skip
        loader.set_epoch(2)
        found = {}
        for data, _, paths, indices in loader.data_loader(collate):
            seeds = [draw_seed(3, 2, index) for index in indices]
            images = augment(decode(data, paths, torch.device("cpu")), 16, seeds)
            found.update(zip(indices, images, strict=True))
        return found

    whole = crops((0, 1))
    ranks = {**crops((0, 2)), **crops((1, 2))}
    assert sorted(ranks) == sorted(whole) and all(torch.equal(ranks[i], whole[i]) for i in whole)


def test_a_file_nothing_decodes_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "cut.jpg"
    good = tmp_path / "good.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good)
    bad.write_bytes(
        good.read_bytes()[: good.stat().st_size // 2]
    )  # the header whole (the workers pass it), half the pixels
    files = EncodedFiles([(good, 0), (bad, 1)])
    data = [files[0][0], files[1][0]]
    with pytest.raises(UsageError, match=r"cut\.jpg is not a readable image"):
        decode(data, [str(good), str(bad)], torch.device("cpu"))


def test_the_loader_processes_refuse_what_the_host_path_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device path reads only bytes in its workers; PIL's header check there refuses, by name, a 16-bit image
    (its conversion to 8-bit RGB clips), a file that is no image, and one over the decompression-bomb limit."""
    deep, text, fine = tmp_path / "scan.png", tmp_path / "notes.jpg", tmp_path / "fine.png"
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(deep)
    text.write_text("not an image")
    Image.new("RGB", (16, 16)).save(fine)
    files = EncodedFiles([(deep, 0), (text, 1), (fine, 2)])
    with pytest.raises(UsageError, match=r"scan\.png is a 'I.*would clip"):
        files[0]
    with pytest.raises(UsageError, match=r"notes\.jpg is not a readable image"):
        files[1]
    assert files[2][0].numel() == fine.stat().st_size
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16 × 16 = 256 pixels > 2 × 100
    with pytest.raises(UsageError, match=r"fine\.png is too large to decode safely"):
        files[2]
    monkeypatch.undo()
    loader = DeviceDecodeLoader(files, 16, batch_size=3, device=torch.device("cpu"), shuffle=True, workers=2, seed=0)
    with pytest.raises(UsageError) as refused:  # from a worker process: one line, not the worker's traceback
        list(loader)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(str(tmp_path)), str(refused.value)


def png_rgb16(path: Path, size: int, value: int) -> None:
    """A 16-bit-per-channel RGB PNG (PIL writes none): PIL opens it as 8-bit "RGB", torchvision as uint16."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + np.full((size, 3), value, dtype=">u2").tobytes()
    header = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b"")
    )


def test_a_16_bit_colour_image_reaches_the_model_as_the_host_path_gives_it(tmp_path: Path) -> None:
    deep = tmp_path / "deep.png"
    png_rgb16(deep, 8, 40000)
    files = EncodedFiles([(deep, 0)])
    (image,) = decode([files[0][0]], [str(deep)], torch.device("cpu"))
    host = torch.from_numpy(np.asarray(Image.open(deep).convert("RGB"))).permute(2, 0, 1)
    assert image.dtype == torch.uint8 and torch.equal(image, host)  # 156 = 40000 // 256 (it was 40000 / 255 ≈ 157)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG needs a CUDA device; none is visible here")
def test_cuda_decoding_matches_the_host_and_an_epoch_runs_on_the_gpu(tmp_path: Path) -> None:
    dataset = EncodedFiles(folder(tmp_path))
    data = [dataset[i][0] for i in range(4)]
    paths = [dataset[i][2] for i in range(4)]
    on_gpu, on_host = decode(data, paths, torch.device("cuda")), decode(data, paths, torch.device("cpu"))
    for gpu, host in zip(on_gpu, on_host, strict=True):
        assert gpu.is_cuda and gpu.shape == host.shape
        assert (gpu.cpu().float() - host.float()).abs().mean() < 2  # nvJPEG and libjpeg round the IDCT differently
    loader = DeviceDecodeLoader(dataset, 16, batch_size=4, device=torch.device("cuda"), shuffle=True, workers=2, seed=3)
    batches = list(loader)
    assert [images.shape[0] for images, _ in batches] == [4, 4, 3] and batches[0][0].is_cuda
