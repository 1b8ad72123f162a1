"""Per-pixel labels (dense prediction): a `Dataset` whose labels are (N, H, W) class-index masks.

    shapes            the generated segmentation dataset cnndsl ships as code: 32x32 pictures of discs,
                      squares and triangles on textured backgrounds, each pixel labelled background (0),
                      disc (1), square (2) or triangle (3); 1,200 / 300 train/test, the same on every machine
    masks:PATH        PATH/images/NAME.(png|jpg) with PATH/masks/NAME.png of the same stem (or PATH/train,
                      PATH/val, PATH/test laid out so): a mask is an index PNG (grayscale, or a palette PNG such
                      as Pascal VOC's, whose palette indices are the classes); 255 is "ignore" (VOC's borders)

Images and masks are resized to the network's input when their size differs (images bilinearly, masks by
nearest neighbour: a label is never averaged). The classes are 0..K-1 for the largest index K-1 found (a
`classes.txt` beside the folders names them, one per line).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnndsl.data.datasets import IMAGE_SUFFIXES, TEST_FRACTION, Dataset, held_out, read_image, regular_file
from cnndsl.data.errors import DataError
from cnndsl.data.examples import MaskExamples

#: The label of pixels that count for nothing (the loss and every metric skip them): Pascal VOC's borders.
IGNORE = 255
SHAPES_CLASSES = ("background", "disc", "square", "triangle")
DENSE_BUILTINS = ("shapes",)  # the built-in datasets of per-pixel labels
SHAPES_SIZE = 32


def shapes_dataset(train: int = 1200, test: int = 300, size: int = SHAPES_SIZE) -> Dataset:
    """The generated shapes dataset (see the module docstring), drawn from a fixed seed."""
    rng = np.random.default_rng(2026)
    images, masks = _draw_shapes(rng, train + test, size)
    return Dataset("shapes", images[:train], masks[:train], images[:0], masks[:0], images[train:], masks[train:],
                   len(SHAPES_CLASSES), 255.0, SHAPES_CLASSES)


def _draw_shapes(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """n pictures of 1 to 3 shapes each (a later shape covers an earlier one) and their masks. Colours are
    drawn independently of the class, so only the outline tells a disc from a square or a triangle."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for k in range(n):
        base = rng.uniform(40, 215, 3)
        ramp = rng.uniform(-1.5, 1.5, 2)  # a gradient and noise: the background is not one colour
        image = base + (ramp[0] * (yy - size / 2) + ramp[1] * (xx - size / 2))[..., None]
        image = image + rng.normal(0, 12, (size, size, 3))
        for _ in range(rng.integers(1, 4)):
            label = int(rng.integers(1, 4))
            r = rng.uniform(4, 8)
            cy, cx = rng.uniform(r, size - r, 2)
            if label == 1:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif label == 2:
                inside = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
            else:  # an upright triangle: below its apex, above its base, between its two sides
                top, bottom = cy - r, cy + r * 0.8
                half = (yy - top) / (bottom - top) * r
                inside = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
            colour = rng.uniform(0, 255, 3)
            while np.abs(colour - base).sum() < 120:  # a shape stands out from its background
                colour = rng.uniform(0, 255, 3)
            image[inside] = colour + rng.normal(0, 12, (int(inside.sum()), 3))
            masks[k][inside] = label
        images[k] = np.clip(image, 0, 255).astype(np.uint8)
    return images, masks


def palette(classes: int = 256) -> np.ndarray:
    """Pascal VOC's colour map (class k's colour from k's bits, spread over the channels' high bits), (N, 3)
    uint8: the palette of the mask PNGs `predict` writes, so VOC tools show them in VOC's colours."""
    colours = np.zeros((classes, 3), np.uint8)
    for k in range(classes):
        value, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[k] = (r, g, b)
    return colours


def mask_pictures(scores: np.ndarray, image: np.ndarray, scale: float) -> tuple[np.ndarray, bytes, bytes]:
    """A prediction as pictures: the mask (each pixel's most probable class, brought back to the image's own
    size by nearest neighbour: a label is never averaged), it as a palette PNG in VOC's colours, and an
    overlay PNG of those colours on the image (whose white level is `scale`; class 0, background, left bare)."""
    import io

    from PIL import Image  # here: Pillow only for image files

    def png(picture: Image.Image) -> bytes:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    colours = palette()
    labels = Image.fromarray(np.argmax(scores, axis=-1).astype(np.uint8), "L")
    height, width = image.shape[:2]
    if labels.size != (width, height):
        labels = labels.resize((width, height), Image.NEAREST)
    mask = np.asarray(labels, np.uint8)
    indexed = Image.fromarray(mask, "P")
    indexed.putpalette(colours.ravel().tolist())
    pixels = np.clip(np.asarray(image, np.float64) / scale * 255, 0, 255)
    pixels = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]
    shaded = np.where((mask > 0)[..., None], 0.45 * pixels + 0.55 * colours[mask], pixels)
    return mask, png(indexed), png(Image.fromarray(shaded.astype(np.uint8), "RGB"))


def class_shares(mask: np.ndarray, classes: list[str] | tuple[str, ...]) -> dict[str, float]:
    """The fraction of a mask's pixels each class present takes, by class name."""
    counts = np.bincount(mask.ravel())
    return {(classes[k] if k < len(classes) else str(k)): float(counts[k] / mask.size) for k in np.nonzero(counts)[0]}


# ---- masks:PATH -------------------------------------------------------------------------------------------

def read_mask(path: Path) -> np.ndarray:
    """A mask PNG as (H, W) uint8 class indices: a grayscale PNG's values, or a palette PNG's indices (never
    its colours). A colour (RGB) mask is refused: its colours would need a table to become classes."""
    from PIL import Image, UnidentifiedImageError  # here: Pillow only for image files

    regular_file(path)
    try:
        with Image.open(path) as image:
            if image.mode in ("P", "L"):
                return np.asarray(image, np.uint8)
            if image.mode in ("I", "I;16"):
                array = np.asarray(image)
                if array.max() > 255:
                    raise DataError(f"{path}: a mask with labels up to {int(array.max())}; masks hold 0..254 "
                                    f"(255: ignore)")
                return array.astype(np.uint8)
            mode = image.mode
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: not a readable PNG mask ({err})") from None
    raise DataError(f"{path}: a {mode} mask; a mask is a grayscale or palette PNG whose values are class indices "
                    "(0, 1, ..., 255 = ignore), as Pascal VOC's SegmentationClass PNGs")


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) of every image of `folder/images` with a mask of its stem in `folder/masks`."""
    images, masks = folder / "images", folder / "masks"
    for needed in (images, masks):
        if not needed.is_dir():
            raise DataError(f"{folder}: no {needed.name}/ folder; a masks dataset holds images/NAME.png (or .jpg) "
                            "and masks/NAME.png of the same names")
    by_stem = {}
    with os.scandir(masks) as entries:
        for entry in entries:
            if entry.name.lower().endswith(".png") and entry.is_file():
                by_stem[Path(entry.name).stem] = Path(entry.path)
    pairs, missing = [], []
    with os.scandir(images) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES or not entry.is_file():
                continue
            stem = Path(entry.name).stem
            if stem in by_stem:
                pairs.append((Path(entry.path), by_stem[stem]))
            else:
                missing.append(entry.name)
    if missing:
        raise DataError(f"{images}: {len(missing)} image{'s' * (len(missing) > 1)} without a mask of the same name "
                        f"in {masks} ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if not pairs:
        raise DataError(f"{images}: no PNG or JPEG images")
    return pairs


def _decoded(pairs: list[tuple[Path, Path]], size: tuple[int, int], channels: int | None
             ) -> tuple[np.ndarray, np.ndarray]:
    """The images (resized bilinearly) and masks (by nearest neighbour) at `size`, as arrays."""
    from PIL import Image  # here: Pillow only for image files

    images, masks = [], []
    for image_path, mask_path in pairs:
        image, mask = read_image(image_path), read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise DataError(f"{mask_path}: {mask.shape[0]}x{mask.shape[1]}, but its image {image_path.name} is "
                            f"{image.shape[0]}x{image.shape[1]}; a mask labels each pixel of its image")
        if image.shape[:2] != size:
            mode = "L" if image.shape[2] == 1 else "RGB"
            resized = Image.fromarray(image[..., 0] if mode == "L" else image, mode).resize(size[::-1], Image.BILINEAR)
            image = np.asarray(resized, np.uint8).reshape(size[0], size[1], -1)
            mask = np.asarray(Image.fromarray(mask, "L").resize(size[::-1], Image.NEAREST), np.uint8)
        if channels is not None and image.shape[2] != channels:
            image = np.repeat(image, channels, axis=2) if image.shape[2] == 1 else image[..., :channels]
        images.append(image)
        masks.append(mask)
    return np.stack(images), np.stack(masks)


Pairs = list[tuple[Path, Path]]


def mask_pairs(root: Path) -> tuple[Pairs, Pairs, Pairs]:
    """(train, val, test) (image, mask) pairs of a masks folder: its train/, val/, test/ folders, or a fixed
    20% of one folder held out as the test split (val then comes from the training split, as elsewhere)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    splits = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    if "train" in splits:
        train = _pairs(splits["train"])
        test = _pairs(splits["test"]) if "test" in splits else []
        val = _pairs(splits["val"]) if "val" in splits else []
        return (train, [], val) if not test else (train, val, test)
    everything = _pairs(root)
    kept, _, held, _ = held_out(np.arange(len(everything)), np.zeros(len(everything)), TEST_FRACTION)
    return [everything[i] for i in kept], [], [everything[i] for i in held]


def _class_names(root: Path, largest: int) -> tuple[str, ...]:
    """The class names: classes.txt's (every class, also those no mask holds), else 0..largest."""
    names_file = root / "classes.txt"
    names = tuple(line.strip() for line in names_file.read_text(encoding="utf-8").splitlines()
                  if line.strip()) if names_file.is_file() else ()
    if names and len(names) <= largest:
        raise DataError(f"{names_file}: {len(names)} class names, but the masks hold labels up to {largest}")
    return names or tuple(str(k) for k in range(largest + 1))


def mask_examples(pairs: Pairs, classes: tuple[str, ...] = ()) -> MaskExamples:
    """(image, mask) pairs as files for the input pipeline."""
    return MaskExamples([str(i) for i, _ in pairs], np.zeros(len(pairs), np.int32), classes, [str(m) for _, m in pairs])


def mask_class_names(root: Path, splits: tuple[Pairs, ...]) -> tuple[str, ...]:
    """The class names of a masks folder read as files: classes.txt's, or (without it) 0..K-1 for the largest
    label K-1 of every mask, each read once."""
    if (root / "classes.txt").is_file():
        return _class_names(root, 0)
    largest = 0
    for pairs in splits:
        for _, mask_path in pairs:
            labels = read_mask(mask_path)
            labels = labels[labels != IGNORE]
            largest = max(largest, int(labels.max()) if labels.size else 0)
    return _class_names(root, largest)


def masks_dataset(root: Path, shape: tuple[int, int, int] | None,
                  splits: tuple[Pairs, Pairs, Pairs] | None = None) -> Dataset:
    """The `masks:PATH` dataset at the network's input `shape` (see the module docstring); `splits`: its
    `mask_pairs`, when the caller listed them already."""
    train, val, test = splits or mask_pairs(root)
    size = tuple(shape[:2]) if shape is not None else None
    if size is None:
        size = read_mask(train[0][1]).shape
    channels = shape[2] if shape is not None else None
    x, y = _decoded(train, size, channels)
    x_test, y_test = _decoded(test, size, channels) if test else (x[:0], y[:0])
    x_val, y_val = _decoded(val, size, channels) if val else (x[:0], y[:0])
    labels = np.concatenate([y.ravel(), y_val.ravel(), y_test.ravel()])
    found = labels[labels != IGNORE]
    names = _class_names(root, int(found.max()) if found.size else 0)
    return Dataset(f"masks:{root}", x, y, x_val, y_val, x_test, y_test, len(names), 255.0, names)
