"""One image file opened as every kdcli image path opens it: PIL reads its header, and the file is refused by name
when it is no image PIL knows, when its pixels would not survive the conversion to 8-bit RGB (16-bit, float), or
when it is larger than PIL's decompression-bomb limit. The host path decodes the pixels inside the ``with``; the
device path (kdcli.data.device_images) reads only the header there and decodes on the GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, Any

from kdcli.errors import UsageError

# PIL modes whose conversion to RGB keeps the picture; 16-bit and float images ("I;16", "I", "F") are clipped at 255.
FAITHFUL_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})


@contextlib.contextmanager
def checked_image(source: IO[bytes], name: str) -> Iterator[Any]:
    """The PIL image of ``source`` (a file named ``name``), its header checked; an error while it is open (decoding
    a damaged file's pixels, say) is a usage error naming the file as well."""
    from PIL import Image

    try:
        with Image.open(source) as image:
            if image.mode not in FAITHFUL_MODES:  # the header's mode, before any pixel is decoded
                raise UsageError(
                    f"{name} is a {image.mode!r} image, whose values converting to 8-bit RGB would clip; convert "
                    "it to 8-bit (RGB or grey) or remove it"
                )
            yield image
    except Image.DecompressionBombError as exc:
        raise UsageError(f"{name} is too large to decode safely ({exc}); resize or remove it") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise UsageError(f"{name} is not a readable image ({exc}); remove or replace it") from None
