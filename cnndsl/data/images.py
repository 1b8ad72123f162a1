"""One image on the host: decode (PNG/JPEG, checked), and the torchvision ImageNet transforms.

Runs in Grain's worker processes, so it imports numpy and Pillow only (never JAX: grain#802).

Evaluation (and training without `resized-crop`): an image already of the network's size is used as it
is; any other is resized (bilinear, antialiased) so that its shorter side is `size / CROP_FRACTION` and its
centre `size` is cropped: torchvision's `Resize(256)` + `CenterCrop(224)` at 224.
Training with `resized-crop`: torchvision's `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`:
a random region of 8%..100% of the area and aspect ratio 3/4..4/3 (log-uniform), resized to `size`. The
horizontal flip of the recipe is the `flip` augmentation, done on the device with the others.
A JPEG is decoded at a reduced scale (Pillow's `draft`: the DCT scaled by 1/2, 1/4 or 1/8) when the region
to keep is at least twice the size it is resized to: the same picture at a fraction of the decoding cost.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

CROP_FRACTION = 0.875  # evaluation: the centre crop keeps 87.5% of the resized shorter side (224 of 256)
SCALE = (0.08, 1.0)  # resized-crop: the fraction of the image's area kept
RATIO = (3 / 4, 4 / 3)  # resized-crop: the aspect ratio (width / height) of the region kept
#: The most pixels one image may have (a 7,000 x 7,000 photo): larger ones are refused from their header,
#: before any pixel is decoded, so a decompression bomb costs nothing.
MAX_IMAGE_PIXELS = 50_000_000


class ImageError(Exception):
    """An image file that cannot be used; the message names it and says why."""


def with_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An (H, W, C) image with `channels` channels: the mean of its channels for one, its first repeated for
    more (how `predict` and `cnndsl run` fit an image to a network's input)."""
    if image.shape[-1] == 4:  # RGBA: the alpha channel is not part of the picture
        image = image[..., :3]
    if image.shape[-1] == channels:
        return image
    return image.mean(axis=-1, keepdims=True) if channels == 1 else np.repeat(image[..., :1], channels, axis=-1)


def in_units(array: np.ndarray, scale: float, white: float) -> np.ndarray:
    """Image values whose white is `white` in the units of a dataset whose white level is `scale`, as float32."""
    return (np.asarray(array, np.float32) * np.float32(scale / white)).astype(np.float32)


def stored_units(pixels: np.ndarray, scale: float) -> np.ndarray:
    """An image file's 0..255 pixels in the units of a dataset whose white level is `scale` (255 becomes
    `scale`), as float32."""
    return in_units(pixels, scale, 255.0)


def array_white(array: np.ndarray, scale: float, white: float | None = None) -> float:
    """The white level an image array given to `predict` or `cnndsl run` is read with: `white` when the
    user gives one; else the run's own (`scale`: arrays are taken in the units its dataset stores), except
    that a float array whose values all lie within 0..1 is read as 0..1 when the run's white level is
    above 1 (ToTensor's convention: a float image in 0..1 is what most Python code holds)."""
    if white is not None:
        return white
    if scale > 1 and np.issubdtype(array.dtype, np.floating) and array.size and 0 <= array.min() and array.max() <= 1:
        return 1.0
    return scale


def evaluation_view(image: np.ndarray, size: tuple[int, int], scale: float) -> np.ndarray:
    """An (H, W, C) image in a dataset's units (white level `scale`), resized and centre-cropped to `size`
    as evaluation does (`transformed`), still in those units, as float32. Whole 0..255 pixels take the
    8-bit path (bit for bit what a PNG of them gets, also after a division by 255); any other values are resized in floating point, one
    channel at a time, so that nothing is clipped or rounded (negative inputs of a network taking its
    inputs as they are included)."""
    from PIL import Image

    pixels = image.astype(np.float64) * (255.0 / scale)
    whole = np.round(pixels)  # within 1e-3: a uint8 image divided by 255 in float32 (ToTensor's output) is whole
    if np.abs(pixels - whole).max() <= 1e-3 and whole.min() >= 0 and whole.max() <= 255:
        out = transformed(whole.astype(np.uint8), "image", size, image.shape[-1]).astype(np.float32)
    else:
        height, width = image.shape[:2]
        box = eval_box(width, height, size)
        planes = [np.asarray(Image.fromarray(pixels[..., c].astype(np.float32), mode="F").resize(
            (size[1], size[0]), Image.Resampling.BILINEAR, box=box)) for c in range(image.shape[-1])]
        out = np.stack(planes, axis=-1)
    return (out * np.float32(scale / 255.0)).astype(np.float32)


def open_image(source: Path | bytes, where: str) -> Any:
    """A Pillow image, its header read and its size checked, pixels not yet decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # cnndsl checks the size itself, below, with a lower limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError:  # Pillow's own limit, checked as it opens the file
        raise ImageError(f"{where}: more pixels than cnndsl reads ({MAX_IMAGE_PIXELS:,}); resize it first") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ImageError(f"{where}: not a readable image ({type(err).__name__}: {err})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{where}: the image is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{where}: {width}x{height} is more pixels than cnndsl reads ({MAX_IMAGE_PIXELS:,}); "
                         "resize it first")
    return image


def _mode(image: Any) -> str:
    return "L" if image.mode in ("1", "L", "I;16", "I", "F", "LA") else "RGB"


def decode(source: Path | bytes, where: str, channels: int | None = None) -> np.ndarray:
    """The whole image as an (H, W, C) uint8 array, C = 1 (grayscale) or 3; `channels` forces one."""
    image = open_image(source, where)
    with image:
        return _to_array(_loaded(image, where), channels)


def _loaded(image: Any, where: str) -> Any:
    try:
        image.load()
        return image.convert(_mode(image))
    except (OSError, ValueError, SyntaxError) as err:  # a truncated or corrupt file shows here, not at open
        raise ImageError(f"{where}: not a readable image ({type(err).__name__}: {err})") from None


def _to_array(image: Any, channels: int | None) -> np.ndarray:
    if channels == 1 and image.mode != "L":
        image = image.convert("L")
    elif channels == 3 and image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def eval_box(width: int, height: int, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The region (left, top, right, bottom) of a width x height image that evaluation resizes to `size`
    (H, W): the centre crop of the image resized to a shorter side of size / CROP_FRACTION."""
    target_h, target_w = size
    if (height, width) == (target_h, target_w):
        return 0.0, 0.0, float(width), float(height)
    shorter = round(min(target_h, target_w) / CROP_FRACTION)
    factor = shorter / min(width, height)
    crop_w, crop_h = target_w / factor, target_h / factor  # the crop in the original image's pixels
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return left, top, left + crop_w, top + crop_h


def random_box(width: int, height: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop.get_params: ten tries at a region of SCALE of the area and RATIO
    aspect; else the whole image, cropped centrally to the nearest ratio in RATIO."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return float(left), float(top), float(left + w), float(top + h)
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif in_ratio > RATIO[1]:
        w, h = round(height * RATIO[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return float(left), float(top), float(left + w), float(top + h)


def transformed_pair(image_path: Path, mask_path: Path, size: tuple[int, int], channels: int,
                     rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An image and its mask as the network's (H, W, C) uint8 input and (H, W) uint8 labels, cut by one box:
    with `rng` the random resized crop, else the whole image (segmentation evaluates every pixel, so no
    centre crop). The image is resized bilinearly, the mask by nearest neighbour: a label is never blended."""
    from PIL import Image

    with open_image(image_path, str(image_path)) as image, open_image(mask_path, str(mask_path)) as mask:
        if mask.mode not in ("P", "L"):
            raise ImageError(f"{mask_path}: a {mask.mode} mask; a mask is a grayscale or palette PNG of class indices")
        if mask.size != image.size:
            raise ImageError(f"{mask_path}: {mask.size[1]}x{mask.size[0]}, but its image is "
                             f"{image.size[1]}x{image.size[0]}")
        width, height = image.size
        box = random_box(width, height, rng) if rng is not None else (0.0, 0.0, float(width), float(height))
        target = (size[1], size[0])
        image = _loaded(image, str(image_path))
        if box != (0.0, 0.0, float(width), float(height)) or image.size != target:
            image = image.resize(target, Image.Resampling.BILINEAR, box=box)
            mask = mask.resize(target, Image.Resampling.NEAREST, box=box)
        return _to_array(image, channels), np.asarray(mask, np.uint8)


def transformed(source: Path | bytes | np.ndarray, where: str, size: tuple[int, int], channels: int,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """An image (a file, its bytes, or already decoded pixels) as the network's (H, W, C) uint8 input:
    the evaluation transform, or with `rng` the random resized crop. Encoded JPEGs use `draft` decoding."""
    from PIL import Image

    if isinstance(source, np.ndarray):
        image = Image.fromarray(source[..., 0] if source.shape[-1] == 1 else source)
    else:
        image = open_image(source, where)
    with image:
        width, height = image.size
        box = random_box(width, height, rng) if rng is not None else eval_box(width, height, size)
        target_h, target_w = size
        if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale while the region stays >= the target
            reduce = min((box[2] - box[0]) / target_w, (box[3] - box[1]) / target_h)
            if reduce >= 2:
                image.draft(image.mode, (math.ceil(width / reduce), math.ceil(height / reduce)))
                shrink = width / image.size[0]
                box = tuple(v / shrink for v in box)  # type: ignore[assignment]
        image = _loaded(image, where)
        if box != (0.0, 0.0, float(image.size[0]), float(image.size[1])) or image.size != (target_w, target_h):
            image = image.resize((target_w, target_h), Image.Resampling.BILINEAR, box=box)
        return _to_array(image, channels)
