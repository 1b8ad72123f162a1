"""Stored pixels to network inputs, inside jit: scale, normalize, resize, augment (one definition
for training, evaluation and inference)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cnndsl.data.images import stored_units
from cnndsl.data.segmentation import IGNORE
from cnndsl.data.pipeline import channel_stats


@dataclass(frozen=True)
class Preprocess:
    """Turns stored pixels into network inputs, inside jit: scale, normalize, resize, augment."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]  # the spec's input H, W
    augment: tuple[str, ...] = ()

    def __call__(self, x: jax.Array, key: jax.Array | None = None, masks: jax.Array | None = None) -> Any:
        """Network inputs for stored pixels `x` (B, H, W, C); with `key` (training), augmented. With per-pixel
        labels `masks` (B, H, W), the pair: each mask cropped and flipped as its image (the crop's padding
        labelled `ignore`, 255)."""
        x = (x.astype(jnp.float32) / self.scale - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        if x.shape[1:3] != self.size:
            x = jax.image.resize(x, (x.shape[0], *self.size, x.shape[3]), "bilinear")
        if key is None or not self.augment:
            return x if masks is None else (x, masks)
        crop_key, flip_key = jax.random.split(key)
        if "crop" in self.augment:  # pad by an eighth of the size (4 pixels at 32x32), crop back at random
            pad_h, pad_w = max(1, self.size[0] // 8), max(1, self.size[1] // 8)
            offsets = jax.random.randint(crop_key, (x.shape[0], 2), 0, jnp.asarray([2 * pad_h + 1, 2 * pad_w + 1]))
            padded = jnp.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
            x = jax.vmap(lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), x.shape[1:]))(padded, offsets)
            if masks is not None:
                padded_masks = jnp.pad(masks, ((0, 0), (pad_h, pad_h), (pad_w, pad_w)), constant_values=IGNORE)
                masks = jax.vmap(lambda m, o: jax.lax.dynamic_slice(m, (o[0], o[1]), masks.shape[1:]))(padded_masks,
                                                                                                      offsets)
        if "flip" in self.augment:
            flip = jax.random.bernoulli(flip_key, 0.5, (x.shape[0], 1, 1, 1))
            x = jnp.where(flip, x[:, :, ::-1, :], x)
            if masks is not None:
                masks = jnp.where(flip[..., 0], masks[:, :, ::-1], masks)
        return x if masks is None else (x, masks)

    def stored_units(self, pixels: np.ndarray) -> np.ndarray:
        """An image file's pixels (0..255) in the units the run's dataset stores (255 becomes `scale`), so a
        PNG of a training image gives the network exactly the input the stored image gives."""
        return stored_units(pixels, self.scale)

    def to_dict(self) -> dict[str, Any]:
        """The run's record of it (settings.json's `normalization`); augmentation is a setting of its own."""
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_run(cls, saved: dict[str, Any], size: tuple[int, int]) -> Preprocess:
        """The preprocessing a run recorded (its settings.json), for a network taking `size` inputs."""
        norm = saved["normalization"]
        return cls(norm["scale"], tuple(norm["mean"]), tuple(norm["std"]), tuple(size))


def normalization(data: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a dataset's training images (after dividing by `scale`)."""
    return channel_stats(data.x_train, data.scale)
