"""Image folders decoded and augmented on the training device (``data.decode: device``, issue 24).

At 224 px one GPU consumes images faster than a host's cores decode JPEGs. With ``data.decode: device`` the loader
processes only read the files' bytes; each batch of JPEGs is decoded on the GPU in one call (torchvision's nvJPEG
``decode_jpeg(..., device="cuda")``), and the random-resized crop, the flip and the scaling to [0, 1] run there too
(each model then normalizes its own input, as on the host path). A file nvJPEG cannot read (PNG, a CMYK or
progressive-only JPEG it refuses) is decoded on the host and moved; one that nothing can decode stops the run with its
name. On a CPU run the option changes nothing: the host path is the faster one there.

The draws are torchvision's ``RandomResizedCrop`` (scale 0.08–1, ratio 3/4–4/3, ten tries then a centre crop) and a
fair coin per image, from a generator seeded by (seed, epoch, the image's index in the folder): a resumed epoch draws
the same, and under torchrun each image is cropped as one process would crop it, whichever rank loads it.
**Choice:** this path crops, flips and resizes (bilinear, antialiased) but leaves out the colour jitter of timm's
host transforms; the evaluation split is resized to ``size / 0.875`` on its shorter side and centre-cropped, as
timm's evaluation transform does. torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec; they
are what this path uses until TorchCodec's GPU JPEG decoder is measured against them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcli.data.images import checked_image
from kdcli.errors import UsageError

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
CROP_PCT = 0.875
JPEG_START = b"\xff\xd8"


def crop_params(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random-resized crop, drawn as torchvision's ``RandomResizedCrop.get_params`` draws
    them (the same calls in the same order, from ``generator`` instead of the global one)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(RATIO))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(SCALE[0], SCALE[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=generator))
        w = round(math.sqrt(target_area * aspect.item()))
        h = round(math.sqrt(target_area / aspect.item()))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, round(width / min(RATIO))
    elif in_ratio > max(RATIO):
        h, w = height, round(height * max(RATIO))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Tensor, top: int, left: int, height: int, width: int, size: int) -> Tensor:
    """The window of a (C, H, W) uint8 image resized to ``size`` × ``size`` (bilinear, antialiased), as floats on the
    0–255 scale: torchvision's ``resized_crop`` on the float image."""
    window = image[None, :, top : top + height, left : left + width].float()
    return F.interpolate(window, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def centre_crop(image: Tensor, size: int) -> Tensor:
    """timm's evaluation transform on the device: the shorter side resized to ``floor(size / 0.875)`` (bilinear,
    antialiased), then the centre ``size`` × ``size``."""
    height, width = image.shape[-2:]
    scale = math.floor(size / CROP_PCT)
    resized = (scale, int(scale * width / height)) if height <= width else (int(scale * height / width), scale)
    out = F.interpolate(image[None].float(), size=resized, mode="bilinear", align_corners=False, antialias=True)[0]
    top, left = round((resized[0] - size) / 2.0), round((resized[1] - size) / 2.0)
    return out[:, top : top + size, left : left + size]


class EncodedFiles(torch.utils.data.Dataset):
    """The files of a checked image folder as raw bytes (what the loader processes read) with their labels."""

    def __init__(self, samples: Sequence[tuple[Any, int]]) -> None:
        self.samples = [(str(path), int(label)) for path, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int, str, int]:
        path, label = self.samples[index]
        raw = Path(path).read_bytes()
        with checked_image(io.BytesIO(raw), path):
            pass  # the header only, the host path's checks; the pixels are decoded on the device
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8), label, path, index


def collate(batch: list[tuple[Tensor, int, str, int]]) -> tuple[list[Tensor], Tensor, list[str], list[int]]:
    data, labels, paths, indices = zip(*batch, strict=True)
    return list(data), torch.tensor(labels), list(paths), list(indices)


def draw_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one image's crop and flip in one epoch."""
    return ((seed * 1_000_003 + epoch) * 2_147_483_647 + index) % 2**63


def decode(data: list[Tensor], paths: list[str], device: torch.device) -> list[Tensor]:
    """Each file as a (3, H, W) uint8 image on ``device``: JPEGs in one nvJPEG call on CUDA, anything else (or a batch
    nvJPEG refuses) on the host, file by file, 16-bit colour brought to 8 bits as the host path does; a file nothing
    can decode is a usage error naming it."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    from torchvision.transforms.v2.functional import to_dtype

    if device.type == "cuda" and all(bytes(d[:2].tolist()) == JPEG_START for d in data):
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass  # one file nvJPEG cannot read: the host decodes each, and names the one nothing can
    images = []
    for encoded, path in zip(data, paths, strict=True):
        try:
            image = decode_image(encoded, mode=ImageReadMode.RGB)
        except RuntimeError as error:
            raise UsageError(
                f"{path} is not a readable image ({str(error).splitlines()[0]}); remove or replace it"
            ) from None
        # a 16-bit RGB PNG decodes to uint16: to 8 bits as PIL's conversion does on the host path (its high byte)
        images.append(to_dtype(image, torch.uint8, scale=True).to(device, non_blocking=True))
    return images


def augment(images: list[Tensor], size: int, seeds: list[int] | None) -> Iterator[Tensor]:
    """Training (``seeds`` given, one per image, ``draw_seed``): each image's random-resized crop and coin-flip
    mirror; evaluation: the centre crop. Floats on the 0–255 scale."""
    for number, image in enumerate(images):
        if seeds is None:
            yield centre_crop(image, size)
            continue
        generator = torch.Generator().manual_seed(seeds[number])
        top, left, h, w = crop_params(image.shape[-2], image.shape[-1], generator)
        out = resized_crop(image, top, left, h, w, size)
        if torch.rand(1, generator=generator).item() < 0.5:
            out = out.flip(-1)
        yield out
