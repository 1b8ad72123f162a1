"""The XLA options every program cnndsl compiles takes: `jax.jit(..., compiler_options=compiler_options())`."""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import numpy as np


def compiler_options() -> dict[str, Any]:
    """XLA options for cnndsl's programs. On CPU:

    - the backend's optimization level 1 (LLVM's cheaper pipeline). Measured on the 2-core CI machine against
      the default: the same train-step times (VGG-style CIFAR batch 32: 317 vs 318 ms; LeNet-5 batch 64: 14.5
      vs 14.0 ms; ResNet-18 batch 4: 503 vs 548 ms) and faster compilation (the digits network's initialization
      0.6 s instead of 2.2 s, ResNet-18's first step 5.1 s instead of 6.5 s);
    - YNNPACK for dots and reductions but not for convolutions (`xla_cpu_experimental_ynn_fusion_type`), unless
      $XLA_FLAGS says otherwise: XLA:CPU's default hands convolutions to YNNPACK too, which runs them slower
      than Eigen, and single-threaded inside a `lax.scan` body. Train steps measured side by side on the 2-core CI
      machine (ms; XLA's default YNNPACK fusions / none / dots and reductions): VGG-style CIFAR batch 64
      616 / 425 / 406, ResNet-18 32x32 batch 32 84 / 128 / 78, MobileNetV2 64x64 batch 16 175 / 327 / 145,
      LeNet-style batch 64 9.0 / 9.0 / 8.8 (benchmarks/convolutions.py's networks and lowerings).

    Other backends keep their defaults (their code generation was not measured)."""
    if jax.default_backend() != "cpu":
        return {}
    options: dict[str, Any] = {"xla_backend_optimization_level": 1}
    if YNN_OPTION not in os.environ.get("XLA_FLAGS", "") and _accepts(YNN_OPTION, YNN_FUSIONS):
        options[YNN_OPTION] = YNN_FUSIONS
    return options


#: The XLA option that lists the fusions XLA:CPU hands to YNNPACK (jaxlib 0.10.2 knows it; whether a jaxlib
#: does is probed once, `_accepts`, 12 ms), and the fusions cnndsl's programs keep: every one but convolutions.
YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


@functools.cache
def _accepts(option: str, value: str) -> bool:
    """Whether this jaxlib's XLA accepts `option` set to `value` (an older one rejects names it does not know)."""
    try:
        jax.jit(lambda: np.float32(0), compiler_options={option: value}).lower().compile()
    except Exception:  # noqa: BLE001 - the error for an unknown option or value differs between versions
        return False
    return True
