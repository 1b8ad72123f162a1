"""How each convolution is lowered, chosen by measurement and cached per layer shape.

XLA lowers every convolution one way on each backend. On CPU that way (Eigen's spatial convolution) is slow
for some shapes: a 1x1 convolution runs 2-4x slower than the same product as a matrix multiply, a
convolution with few input channels (a network's first layer) or its input gradient 2-4x slower than the
product of its shifted input slices with the kernel (im2col). Elsewhere (3x3 convolutions of many channels)
it is the fastest. So each of a convolution's three computations (the output, the gradient for its input
and the gradient for its kernel) is lowered by whichever of these is fastest for that layer's shape:

    xla      lax.conv_general_dilated, and the convolutions JAX derives for its gradients
    matmul   one matrix product of the kernel with the input's kh*kw shifted (strided) slices side by side,
             and the gradients JAX derives for that (slices, pads and products)
    taps     for depthwise convolutions (one filter per channel): the sum of the kh*kw shifted slices, each
             times its tap of the kernel, elementwise (XLA:CPU's grouped convolution runs 20-60x slower)

`tune(shapes, batch)` measures what it has not measured before (each candidate compiled ahead and timed,
the median of a few runs, within a time budget) and keeps the choices in `$CNNDSL_CACHE/conv-lowerings.json`,
keyed by the backend, the device and the layer's shape; `conv_general_dilated`, which the network's
`nnx.Conv` layers call, reads them while a program is traced. A shape with no choice lowers as XLA does.
The lowerings compute the same sums in another order: they agree to float32 rounding (tests/nn/test_convolution.py).

$CNNDSL_CONV_LOWERING=xla turns the choice off (every convolution as XLA lowers it; the tests' default, so
their runs compare bit for bit from process to process); "measure", the default, chooses. Whatever it says,
a convolution inside a scanned run of repeated blocks (`traced_in_loop`) on CPU takes its gradients as
*canonical* forward convolutions: XLA folds the transposes its own gradients need into the convolution's
dimension numbers, and inside a loop XLA:CPU then computes them without Eigen (the kernel's gradient 18x, the
input's 3x slower than unrolled); written out with the transposes materialized they run with Eigen there too and
give XLA's sums (`canonical_input_grad`, `canonical_kernel_grad`; `python benchmarks/scan_repro.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import statistics
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnndsl.lang.outputs import OutputError, cache_dir, write_atomic
from cnndsl.nn.options import compiler_options

#: The lowerings a plain convolution's computations can take, and a depthwise one's.
CANDIDATES = ("xla", "matmul")
DEPTHWISE_CANDIDATES = ("xla", "taps")

#: The computations of a convolution chosen separately.
PARTS = ("output", "input_grad", "kernel_grad")

#: Seconds `tune` may spend measuring in one call; shapes left over keep XLA's lowering until a later run.
BUDGET_S = 20.0

#: The batch the measurements use at most: the choice depends on the layer's shape, hardly on the batch.
TUNE_BATCH = 16


@dataclass(frozen=True)
class ConvShape:
    """A convolution as its lowering depends on it: input (h, w, c), kernel, filters, stride, padding, dtype."""

    height: int
    width: int
    channels: int
    kernel: tuple[int, int]
    filters: int
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dtype: str
    #: whether the gradient for the input is computed at all (not for a convolution of the network's input)
    input_grad: bool = True
    #: 1, or the channels for a depthwise convolution (one filter per channel)
    groups: int = 1

    @property
    def candidates(self) -> tuple[str, ...]:
        """The lowerings this shape can take."""
        return CANDIDATES if self.groups == 1 else DEPTHWISE_CANDIDATES

    def key(self) -> str:
        """The cache's key for this shape."""
        (t, b), (left, right) = self.padding
        return (f"{self.height}x{self.width}x{self.channels} k{self.kernel[0]}x{self.kernel[1]} f{self.filters} "
                f"s{self.stride[0]}x{self.stride[1]} p{t},{b},{left},{right} {self.dtype}"
                f"{f' g{self.groups}' if self.groups != 1 else ''}{'' if self.input_grad else ' first'}")


@dataclass(frozen=True)
class Plan:
    """The lowering of each computation of one convolution shape."""

    output: str = "xla"
    input_grad: str = "xla"
    kernel_grad: str = "xla"

    @property
    def native(self) -> bool:
        """Whether everything is XLA's own lowering (then the convolution is exactly lax's)."""
        return self.output == self.input_grad == self.kernel_grad == "xla"


#: The choices known to this process, by shape (read while tracing).
PLANS: dict[ConvShape, Plan] = {}

#: How many loops (`jax.lax.scan` bodies) are being traced around the current convolution.
_LOOPS = [0]


@contextlib.contextmanager
def traced_in_loop() -> Iterator[None]:
    """Convolutions traced inside take their gradients as canonical forward convolutions on CPU (`in_loop`)."""
    _LOOPS[0] += 1
    try:
        yield
    finally:
        _LOOPS[0] -= 1


def enabled() -> bool:
    """Whether convolutions are lowered by measurement ($CNNDSL_CONV_LOWERING, default "measure")."""
    return os.environ.get("CNNDSL_CONV_LOWERING", "measure") != "xla"


# ---- the lowerings ----------------------------------------------------------------------------------------

def xla_conv(x: jax.Array, kernel: jax.Array, shape: ConvShape) -> jax.Array:
    """XLA's own convolution (NHWC input, HWIO kernel)."""
    return lax.conv_general_dilated(x, kernel, shape.stride, shape.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=shape.groups)


def padded(x: jax.Array, shape: ConvShape) -> jax.Array:
    """The NHWC input with the convolution's explicit padding around its height and width."""
    return jnp.pad(x, ((0, 0), *shape.padding, (0, 0))) if any(p for pair in shape.padding for p in pair) else x


def shifted_views(x: jax.Array, shape: ConvShape) -> list[jax.Array]:
    """The kh*kw strided slices of the padded input, in the kernel's (i, j) order: view (i, j) holds, at each
    output position, the input element that the kernel's tap (i, j) multiplies."""
    (kh, kw), (sh, sw) = shape.kernel, shape.stride
    x = padded(x, shape)
    out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    return [x[:, i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw, :]
            for i in range(kh) for j in range(kw)]


def matmul_conv(x: jax.Array, kernel: jax.Array, shape: ConvShape) -> jax.Array:
    """The convolution as one matrix product: the kh*kw strided slices of the padded input side by side
    (channels last, in the kernel's (i, j, c) order) times the kernel reshaped to (kh*kw*c, filters)."""
    views = shifted_views(x, shape)
    columns = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
    batch, out_h, out_w, width = columns.shape
    product = jnp.dot(columns.reshape(-1, width), kernel.reshape(width, -1), preferred_element_type=x.dtype)
    return product.reshape(batch, out_h, out_w, kernel.shape[-1])


def taps_conv(x: jax.Array, kernel: jax.Array, shape: ConvShape) -> jax.Array:
    """A depthwise convolution (kernel (kh, kw, 1, channels)) as the sum over its kh*kw taps of the input's
    strided slice times that tap's weights, channel by channel: one elementwise loop XLA fuses."""
    taps = kernel.reshape(-1, kernel.shape[-1])  # (kh*kw, channels), in the views' (i, j) order
    total = None
    for view, tap in zip(shifted_views(x, shape), taps):
        total = view * tap if total is None else total + view * tap
    return total


def canonical_input_grad(grad: jax.Array, kernel: jax.Array, shape: ConvShape) -> jax.Array:
    """The gradient for a stride-1 convolution's input as a forward NHWC/HWIO convolution: the output's gradient,
    padded by the kernel's size less the forward padding, with the kernel flipped and its channels swapped,
    materialized (an optimization barrier keeps XLA from folding the transpose into the convolution's dimension
    numbers, a layout XLA:CPU computes without Eigen inside a loop, 3x slower). The sums of XLA's own input
    gradient (the same bits where measured; tests/nn/test_convolution.py checks to float32 rounding)."""
    (kh, kw), ((t, b), (left, right)) = shape.kernel, shape.padding
    flipped = lax.optimization_barrier(jnp.flip(jnp.swapaxes(kernel, 2, 3), (0, 1)))
    return lax.conv_general_dilated(grad, flipped, (1, 1), ((kh - 1 - t, kh - 1 - b), (kw - 1 - left, kw - 1 - right)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def canonical_kernel_grad(x: jax.Array, grad: jax.Array, shape: ConvShape) -> jax.Array:
    """The gradient for a stride-1 convolution's kernel as a forward NHWC/HWIO convolution: the padded input with
    its batch and channels swapped (channels as the batch) convolved with the output's gradient (batch as the input
    channels), both materialized (as in `canonical_input_grad`; XLA:CPU's own kernel gradient runs 18x slower inside
    a loop). The sums of XLA's own kernel gradient (the same bits where measured; checked to float32 rounding)."""
    lhs, rhs = lax.optimization_barrier((jnp.transpose(padded(x, shape), (3, 1, 2, 0)),
                                         jnp.transpose(grad, (1, 2, 0, 3))))
    out = lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.transpose(out, (1, 2, 0, 3))  # (channels, kh, kw, filters) -> HWIO


def canonical_fits(shape: ConvShape) -> bool:
    """Whether the canonical gradients apply: a plain stride-1 convolution padded by less than its kernel."""
    return (shape.groups == 1 and shape.stride == (1, 1)
            and all(0 <= p < k for pair, k in zip(shape.padding, shape.kernel) for p in pair))


LOWERINGS = {"xla": xla_conv, "matmul": matmul_conv, "taps": taps_conv}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def planned_conv(x: jax.Array, kernel: jax.Array, shape: ConvShape, plan: Plan) -> jax.Array:
    """The convolution with each computation lowered as `plan` says."""
    return LOWERINGS[plan.output](x, kernel, shape)


def _planned_forward(x: jax.Array, kernel: jax.Array, shape: ConvShape, plan: Plan) -> tuple[jax.Array, Any]:
    return LOWERINGS[plan.output](x, kernel, shape), (x, kernel)


def _planned_backward(shape: ConvShape, plan: Plan, saved: Any, grad: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = saved
    # each gradient is the transpose of one lowering, taken for that argument alone (the other's is not built),
    # or written out as a forward convolution ("canonical")
    if plan.input_grad == "canonical":
        input_grad = canonical_input_grad(grad, kernel, shape)
    else:
        input_grad = jax.vjp(lambda v: LOWERINGS[plan.input_grad](v, kernel, shape), x)[1](grad)[0]
    if plan.kernel_grad == "canonical":
        kernel_grad = canonical_kernel_grad(x, grad, shape)
    else:
        kernel_grad = jax.vjp(lambda k: LOWERINGS[plan.kernel_grad](x, k, shape), kernel)[1](grad)[0]
    return input_grad, kernel_grad


planned_conv.defvjp(_planned_forward, _planned_backward)


def conv_shape(x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], stride: Any, padding: Any,
               dtype: Any, groups: int = 1) -> ConvShape:
    """The `ConvShape` of an NHWC input and HWIO kernel with explicit padding."""
    return ConvShape(int(x_shape[1]), int(x_shape[2]), int(x_shape[3]), (int(kernel_shape[0]), int(kernel_shape[1])),
                     int(kernel_shape[3]), (int(stride[0]), int(stride[1])),
                     tuple((int(a), int(b)) for a, b in padding), jnp.dtype(dtype).name,  # type: ignore[arg-type]
                     groups=groups)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any,
                         lhs_dilation: Any = None, rhs_dilation: Any = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, precision: Any = None, **kwargs: Any) -> jax.Array:
    """`lax.conv_general_dilated` as `nnx.Conv` calls it, lowered by this shape's plan where one was chosen
    (NHWC convolutions without dilation, plain or depthwise, explicit padding); otherwise lax's own."""
    # nnx.Conv passes out_sharding (and preferred_element_type), None unless set
    depthwise = feature_group_count > 1 and feature_group_count == lhs.shape[-1] == rhs.shape[-1]
    plain = ((feature_group_count == 1 or depthwise) and all(v is None for v in kwargs.values()) and precision is None
             and not isinstance(padding, str)
             and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
             and _nhwc(dimension_numbers) and lhs.ndim == 4)
    chosen = bool(PLANS) and enabled()
    looped = bool(_LOOPS[0]) and jax.default_backend() == "cpu"
    if plain and (chosen or looped):
        shape = conv_shape(lhs.shape, rhs.shape, window_strides, padding, lhs.dtype, feature_group_count)
        plan = (chosen and (PLANS.get(shape) or PLANS.get(dataclasses.replace(shape, input_grad=False)))) or Plan()
        if looped:
            plan = in_loop(plan, shape)
        if not plan.native:
            return planned_conv(lhs, rhs, shape, plan)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision, **kwargs)


def in_loop(plan: Plan, shape: ConvShape) -> Plan:
    """The plan for a convolution traced inside a loop on CPU: XLA's own gradients, which XLA:CPU computes there
    without Eigen (the kernel's 18x, the input's 3x slower than unrolled), written out as canonical forward
    convolutions where they apply (stride 1); otherwise the kernel's as the matrix product's. Depthwise
    convolutions keep their plan."""
    if shape.groups != 1:
        return plan
    if not canonical_fits(shape):
        return plan if plan.kernel_grad != "xla" else dataclasses.replace(plan, kernel_grad="matmul")
    return dataclasses.replace(plan, **{part: "canonical" for part in ("input_grad", "kernel_grad")
                                        if getattr(plan, part) == "xla"})


def _nhwc(numbers: Any) -> bool:
    """Whether dimension numbers are NHWC input, HWIO kernel, NHWC output (nnx.Conv's)."""
    if isinstance(numbers, lax.ConvDimensionNumbers):
        return tuple(numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    return tuple(numbers or ()) == ("NHWC", "HWIO", "NHWC")


# ---- measuring --------------------------------------------------------------------------------------------

def cache_file() -> Path:
    """Where the choices are kept: $CNNDSL_CACHE/conv-lowerings.json (default ~/.cache/cnndsl)."""
    return cache_dir() / "conv-lowerings.json"


def device_key() -> str:
    """The backend and device the choices hold for (another machine measures again)."""
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}:{os.cpu_count()}"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(found: dict[str, dict[str, str]]) -> None:
    """Merge this process's new choices into the cache file, atomically (several processes may write)."""
    path = cache_file()
    data = _read_cache()
    data.setdefault(device_key(), {}).update(found)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except (OSError, OutputError):  # a read-only cache: the choices hold for this process
        pass


def load_cached(shapes: Iterable[ConvShape]) -> list[ConvShape]:
    """Take the cached choices of these shapes into PLANS; returns the shapes with none. A shape this process
    has a plan for keeps it (its programs were traced with it), whatever another process wrote since."""
    known = _read_cache().get(device_key(), {})
    missing = []
    for shape in shapes:
        if shape in PLANS:
            continue
        entry = known.get(shape.key())
        if isinstance(entry, dict) and all(entry.get(part) in shape.candidates for part in PARTS):
            PLANS[shape] = Plan(**{part: entry[part] for part in PARTS})
        else:
            missing.append(shape)
    return missing


def _time(compiled: Any, args: tuple[Any, ...], deadline: float) -> float:
    """Median seconds of a compiled program over a few waited runs (fewer once past the deadline)."""
    jax.block_until_ready(compiled(*args))  # the first run pays for allocation
    times = []
    for _ in range(5):
        started = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - started)
        if time.perf_counter() > deadline and len(times) >= 2:
            break
    return statistics.median(times)


def measure(shape: ConvShape, batch: int, deadline: float) -> Plan:
    """Each computation's fastest lowering for this shape at this batch, timed on this machine."""
    rng = np.random.default_rng(0)
    dtype = jnp.dtype(shape.dtype)
    x = jnp.asarray(rng.normal(size=(batch, shape.height, shape.width, shape.channels)), dtype)
    kernel = jnp.asarray(rng.normal(size=(*shape.kernel, shape.channels // shape.groups, shape.filters)), dtype)
    grad = jnp.asarray(rng.normal(size=jax.eval_shape(lambda: xla_conv(x, kernel, shape)).shape), dtype)
    programs = {
        "output": lambda name: (lambda x, k, g: LOWERINGS[name](x, k, shape)),
        "input_grad": lambda name: (lambda x, k, g: jax.vjp(lambda v: LOWERINGS[name](v, k, shape), x)[1](g)[0]),
        "kernel_grad": lambda name: (lambda x, k, g: jax.vjp(lambda w: LOWERINGS[name](x, w, shape), k)[1](g)[0]),
    }
    parts = [part for part in PARTS if part != "input_grad" or shape.input_grad]
    options = compiler_options()  # as the runs' own programs
    jobs = [(part, name) for part in parts for name in shape.candidates]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # XLA compiles outside the GIL: all at once
        compiled = dict(zip(jobs, pool.map(
            lambda job: jax.jit(programs[job[0]](job[1]), compiler_options=options).lower(x, kernel, grad).compile(),
            jobs)))
    chosen = {}
    for part in parts:
        timings = {name: _time(compiled[part, name], (x, kernel, grad), deadline) for name in shape.candidates}
        # XLA's own unless another is at least twice as fast: measured alone at the measuring batch, smaller gains
        # did not carry over to whole train steps (the VGG-style step ran 1.10x slower with choices 1.25x better
        # alone, LeNet's 1.17x); the gains that do carry over are 3-60x (3x3 convolutions of 1x1 and 2x2 maps,
        # depthwise ones: ResNet-18 and MobileNetV2 steps 4-5x faster)
        best = min(timings, key=timings.__getitem__)
        chosen[part] = best if timings[best] < 0.5 * timings["xla"] else "xla"
    return Plan(**chosen)


def tune(shapes: Iterable[ConvShape], batch: int, budget_s: float = BUDGET_S) -> dict[ConvShape, Plan]:
    """Choose the lowering of each shape not chosen before (cached choices are read first), measuring at
    `batch` (at most TUNE_BATCH) within `budget_s` seconds; returns the plans of `shapes` now known."""
    shapes = list(dict.fromkeys(shapes))
    if not enabled() or not shapes:
        return {}
    missing = load_cached(shapes)
    deadline = time.perf_counter() + budget_s
    found = {}
    for shape in missing:
        if time.perf_counter() > deadline:
            break
        PLANS[shape] = plan = measure(shape, min(batch, TUNE_BATCH), deadline)
        found[shape.key()] = {part: getattr(plan, part) for part in PARTS}
    if found:
        _write_cache(found)
    return {shape: PLANS[shape] for shape in shapes if shape in PLANS}
