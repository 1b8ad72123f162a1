"""IR graph + parameters -> an ONNX model, built node by node with the `onnx` package (no tracing).

    model = to_onnx(report, arrays, preprocess=None)     # onnx.ModelProto, checked by onnx.checker

The model's input `input` is (batch, H, W, C) float32, channels last like every cnndsl network (the
batch dimension is symbolic); it is transposed once to ONNX's NCHW, and the output goes back to channels
last when it is an image. With `preprocess` (a training run's {"scale", "mean", "std"}) the model takes
raw pixels and normalizes them first, as the run did. Padding is always explicit and ceil-mode pooling
becomes explicit end padding (`ceil_mode=0`, the runtimes' most reliable form); an average pool that
counts its padding but not the ceil-mode extra (PyTorch's rule) pads with zeros first. Opset 18 and IR
version 9 are pinned: ONNX Runtime 1.15 and later run them.

`arrays` are the network's parameters and batch statistics by cnndsl's names (`conv1/kernel`,
`bn1/mean`); kernels are converted from HWIO to OIHW.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnndsl.lang import ir

OPSET = 18
IR_VERSION = 9


class OnnxError(Exception):
    """A network that cannot be written as ONNX; the message says why."""


class _Builder:
    """Collects nodes and initializers; `value` names are unique strings."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def add(self, op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        self.count += 1
        output = f"{name}:{self.count}" if name else f"t{self.count}"
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=f"{name or op}_{self.count}",
                                                **attributes))
        return output


def to_onnx(report: Any, arrays: dict[str, np.ndarray], preprocess: dict[str, Any] | None = None,
            doc: str = "") -> Any:
    """The network of a checked `report` with these parameters as an ONNX ModelProto (checked)."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        raise OnnxError("writing ONNX needs the onnx package: pip install 'cnndsl[onnx]'") from None
    from cnndsl.nn.flax_backend import (
        plan,  # here: importing this module (for OnnxError) stays light
    )

    graph = report.graph
    shapes = report.node_shapes
    b = _Builder()
    h, w, c = graph.input_shape
    x = "input"
    if preprocess is not None:  # raw pixels -> the run's normalized inputs: (x / scale - mean) / std
        x = b.add("Div", [x, b.constant("preprocess/scale", np.float32(preprocess["scale"]))], "preprocess")
        x = b.add("Sub", [x, b.constant("preprocess/mean", np.asarray(preprocess["mean"], np.float32))], "preprocess")
        x = b.add("Div", [x, b.constant("preprocess/std", np.asarray(preprocess["std"], np.float32))], "preprocess")
    values = {0: b.add("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])}
    dropped = graph.training_only_nodes  # training-only heads are not part of the model a user deploys
    for step in plan(graph, shapes):
        if step.id in dropped:
            continue
        ins = [values[i] for i in step.inputs]
        values[step.id] = _lower(b, step, ins, arrays, shapes[step.id], [shapes[i] for i in step.inputs])
    outputs = []
    # the main output is `output`; every other head is an output named after it
    for name, node in [("output", graph.output)] + [(head.name, head.node) for head in graph.inference_heads]:
        out, out_shape = values[node], shapes[node]
        if len(out_shape) == 3:  # an image: back to channels last
            out = b.add("Transpose", [out], "to_nhwc" if name == "output" else f"{name}/to_nhwc", perm=[0, 2, 3, 1])
        b.nodes.append(helper.make_node("Identity", [out], [name], name=name))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *out_shape]))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", h, w, c])]
    onnx_graph = helper.make_graph(b.nodes, graph.name, inputs, outputs, b.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="cnndsl", doc_string=doc)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _param(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in arrays:
        raise OnnxError(f"no parameter {name!r} (the parameters do not belong to this network)")
    return np.asarray(arrays[name], np.float32)


def _lower(b: _Builder, step: Any, ins: list[str], arrays: dict[str, np.ndarray], out_shape: tuple[int, ...],
           in_shapes: list[tuple[int, ...]]) -> str:
    """ONNX nodes for one IR step; returns the name of its output (NCHW for images)."""
    op, name, x = step.op, step.name, ins[0]
    if isinstance(op, ir.Conv):
        kernel = _param(arrays, f"{name}/kernel").transpose(3, 2, 0, 1)  # HWIO -> OIHW
        inputs = [x, b.constant(f"{name}/kernel", kernel)]
        if op.bias:
            inputs.append(b.constant(f"{name}/bias", _param(arrays, f"{name}/bias")))
        (top, bottom), (left, right) = step.pads
        return b.add("Conv", inputs, name, kernel_shape=list(op.kernel), strides=list(op.stride),
                     dilations=list(op.dilation), group=op.groups, pads=[top, left, bottom, right])
    if isinstance(op, ir.ConvTranspose):  # (kh, kw, in, out/groups) -> PyTorch's and ONNX's (in, out/groups, kh, kw)
        kernel = _param(arrays, f"{name}/kernel").transpose(2, 3, 0, 1)
        inputs = [x, b.constant(f"{name}/kernel", kernel)]
        if op.bias:
            inputs.append(b.constant(f"{name}/bias", _param(arrays, f"{name}/bias")))
        return b.add("ConvTranspose", inputs, name, kernel_shape=list(op.kernel), strides=list(op.stride),
                     dilations=list(op.dilation), group=op.groups, output_padding=list(op.output_padding),
                     pads=[op.pad[0], op.pad[1], op.pad[0], op.pad[1]])
    if isinstance(op, ir.Pool):
        return _pool(b, step, x)
    if isinstance(op, ir.GlobalPool):
        pooled = b.add("GlobalAveragePool" if op.mode == "avg" else "GlobalMaxPool", [x], name)
        return b.add("Flatten", [pooled], name, axis=1)
    if isinstance(op, ir.AdaptivePool):  # NCHW: x @ columns^T, then over rows the same way
        from cnndsl.nn.flax_backend import adaptive_bins

        h, w, _ = step.in_shape
        cols = b.constant(f"{name}/columns", np.asarray(adaptive_bins(w, op.size[1]), np.float32).T)
        rows = b.constant(f"{name}/rows", np.asarray(adaptive_bins(h, op.size[0]), np.float32).T)
        x = b.add("Transpose", [b.add("MatMul", [x, cols], name)], name, perm=[0, 1, 3, 2])
        return b.add("Transpose", [b.add("MatMul", [x, rows], name)], name, perm=[0, 1, 3, 2])
    if isinstance(op, ir.ChannelSlice):  # channels are axis 1 of NCHW and of (N, C)
        bounds = [b.constant(f"{name}/{part}", np.asarray([v], np.int64))
                  for part, v in (("starts", op.start), ("ends", op.stop), ("axes", 1))]
        return b.add("Slice", [x, *bounds], name)
    if isinstance(op, ir.ChannelShuffle):  # NCHW: (N, g, C/g, H, W), transposed, back; 0 keeps the batch size
        h, w, c = step.in_shape
        grouped = b.add("Reshape", [x, b.constant(f"{name}/grouped", np.asarray([0, op.groups, c // op.groups, h, w],
                                                                                 np.int64))], name)
        swapped = b.add("Transpose", [grouped], name, perm=[0, 2, 1, 3, 4])
        return b.add("Reshape", [swapped, b.constant(f"{name}/shape", np.asarray([0, c, h, w], np.int64))], name)
    if isinstance(op, ir.PixelShuffle):  # DepthToSpace's CRD mode is PyTorch's pixel_shuffle
        return b.add("DepthToSpace", [x], name, blocksize=op.factor, mode="CRD")
    if isinstance(op, ir.Upsample):
        scales = b.constant(f"{name}/scales", np.asarray([1, 1, op.scale, op.scale], np.float32))
        if op.mode == "nearest":  # PyTorch's nearest: source index floor(i / s)
            return b.add("Resize", [x, "", scales], name, mode="nearest", coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor")
        return b.add("Resize", [x, "", scales], name, mode="linear",
                     coordinate_transformation_mode="pytorch_half_pixel")
    if isinstance(op, ir.Resize):  # to a size: the same coordinate rules, ONNX's `sizes` input (NCHW)
        shape = b.add("Shape", [x], f"{name}/shape", start=0, end=2)
        sizes = b.add("Concat", [shape, b.constant(f"{name}/size", np.asarray(op.size, np.int64))], f"{name}/sizes",
                      axis=0)
        if op.mode == "nearest":
            return b.add("Resize", [x, "", "", sizes], name, mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return b.add("Resize", [x, "", "", sizes], name, mode="linear", coordinate_transformation_mode="pytorch_half_pixel")
    if isinstance(op, (ir.Dense, ir.Flatten)):
        if len(step.in_shape) == 3:  # cnndsl flattens in H, W, C order
            x = b.add("Flatten", [b.add("Transpose", [x], name, perm=[0, 2, 3, 1])], name, axis=1)
        if isinstance(op, ir.Flatten):
            return x
        inputs = [x, b.constant(f"{name}/kernel", _param(arrays, f"{name}/kernel"))]  # (in, out): Gemm's B
        if op.bias:
            inputs.append(b.constant(f"{name}/bias", _param(arrays, f"{name}/bias")))
        return b.add("Gemm", inputs, name)
    if isinstance(op, (ir.Linear, ir.LayerNorm)):  # over channels: axis 1 of NCHW, so channels last around it
        image = len(step.in_shape) == 3
        y = b.add("Transpose", [x], name, perm=[0, 2, 3, 1]) if image else x
        if isinstance(op, ir.LayerNorm):
            parts = [b.constant(f"{name}/{p}", _param(arrays, f"{name}/{p}")) for p in ("scale", "bias")]
            y = b.add("LayerNormalization", [y, *parts], name, axis=-1, epsilon=op.eps)
        else:
            y = b.add("MatMul", [y, b.constant(f"{name}/kernel", _param(arrays, f"{name}/kernel"))], name)
            if op.bias:
                y = b.add("Add", [y, b.constant(f"{name}/bias", _param(arrays, f"{name}/bias"))], name)
        return b.add("Transpose", [y], name, perm=[0, 3, 1, 2]) if image else y
    if isinstance(op, ir.LayerScale):
        scale = _param(arrays, f"{name}/scale")
        return b.add("Mul", [x, b.constant(f"{name}/scale", scale.reshape(-1, 1, 1) if len(step.in_shape) == 3
                                           else scale)], name)
    if isinstance(op, ir.Activation):
        return _activation(b, op, x, name, len(step.in_shape))
    if isinstance(op, ir.BatchNorm):
        parts = [b.constant(f"{name}/{p}", _param(arrays, f"{name}/{p}")) for p in ("scale", "bias", "mean", "var")]
        return b.add("BatchNormalization", [x, *parts], name, epsilon=op.eps)
    if isinstance(op, ir.LocalResponseNorm):
        return _lrn(b, op, x, name, step.in_shape)
    if isinstance(op, (ir.Dropout, ir.DropPath)):  # inference: the identity
        return x
    if isinstance(op, ir.Concat):
        return b.add("Concat", ins, name, axis=1)  # channels: axis 1 of NCHW and of (N, C)
    if isinstance(op, ir.Add):
        return b.add("Sum", ins, name) if len(ins) > 2 else b.add("Add", ins, name)
    if isinstance(op, ir.Mul):  # a (N, C) gate becomes (N, C, 1, 1) to scale an NCHW map; 1x1 maps broadcast
        vectors = len(out_shape) == 3 and any(len(s) == 1 for s in in_shapes)
        axes = b.constant(f"{name}/axes", np.asarray([2, 3], np.int64)) if vectors else ""
        shaped = [b.add("Unsqueeze", [x_i, axes], name) if vectors and len(s) == 1 else x_i
                  for x_i, s in zip(ins, in_shapes)]
        product = shaped[0]
        for other in shaped[1:]:
            product = b.add("Mul", [product, other], name)
        return product
    raise OnnxError(f"no ONNX lowering for {op.label()} ({name})")


def _pool(b: _Builder, step: Any, x: str) -> str:
    op, name = step.op, step.name
    (top, bottom), (left, right) = step.pads
    extra_h, extra_w = step.extra
    common = {"kernel_shape": list(op.window), "strides": list(op.stride), "ceil_mode": 0}
    if op.mode == "max":
        return b.add("MaxPool", [x], name, pads=[top, left, bottom + extra_h, right + extra_w],
                     dilations=list(op.dilation), **common)
    if op.count_pad and (top or bottom or left or right):
        # the explicit padding counts in the divisor, the ceil-mode extra does not: pad with zeros first
        pads = b.constant(f"{name}/pads", np.asarray([0, 0, top, left, 0, 0, bottom, right], np.int64))
        x = b.add("Pad", [x, pads], name)
        top = bottom = left = right = 0
    return b.add("AveragePool", [x], name, pads=[top, left, bottom + extra_h, right + extra_w],
                 count_include_pad=0, **common)


def _activation(b: _Builder, op: ir.Activation, x: str, name: str, rank: int) -> str:
    fn = op.fn
    if fn == "relu":
        return b.add("Relu", [x], name)
    if fn == "relu6":
        return b.add("Clip", [x, b.constant(f"{name}/min", np.float32(0)), b.constant(f"{name}/max", np.float32(6))],
                     name)
    if fn == "tanh":
        return b.add("Tanh", [x], name)
    if fn == "sigmoid":
        return b.add("Sigmoid", [x], name)
    if fn == "silu":
        return b.add("Mul", [x, b.add("Sigmoid", [x], name)], name)
    if fn == "hardswish":  # ONNX's HardSwish is x * max(0, min(1, x / 6 + 1 / 2)): relu6(x + 3) / 6 exactly
        return b.add("HardSwish", [x], name)
    if fn == "hardsigmoid":  # ONNX's default slope is 0.2; PyTorch's and JAX's is 1/6
        return b.add("HardSigmoid", [x], name, alpha=1.0 / 6.0, beta=0.5)
    if fn == "leaky_relu":
        return b.add("LeakyRelu", [x], name, alpha=float(op.slope))
    if fn == "gelu":  # the exact form: x * (1 + erf(x / sqrt 2)) / 2 (opset 18 has no Gelu)
        scaled = b.add("Div", [x, b.constant(f"{name}/sqrt2", np.float32(math.sqrt(2.0)))], name)
        one_plus = b.add("Add", [b.add("Erf", [scaled], name), b.constant(f"{name}/one", np.float32(1))], name)
        return b.add("Mul", [b.add("Mul", [x, one_plus], name), b.constant(f"{name}/half", np.float32(0.5))], name)
    if fn == "softmax":  # over cnndsl's last axis: the channels, axis 1 of an NCHW image
        return b.add("Softmax", [x], name, axis=1 if rank == 3 else -1)
    raise OnnxError(f"no ONNX lowering for the activation {fn}")


def _lrn(b: _Builder, op: ir.LocalResponseNorm, x: str, name: str, in_shape: tuple[int, ...]) -> str:
    if op.size % 2:  # ONNX's LRN centres an odd window exactly as cnndsl does
        return b.add("LRN", [x], name, size=op.size, alpha=float(op.alpha), beta=float(op.beta), bias=float(op.k))
    # an even window has size // 2 channels before the centre in cnndsl, one fewer in ONNX: sum the squares
    # with a ones kernel over the channel axis instead
    h, w, c = in_shape
    before, after = op.size // 2, (op.size - 1) // 2
    squares = b.add("Mul", [x, x], name)
    column = b.add("Reshape", [squares, b.constant(f"{name}/as_column", np.asarray([-1, 1, c, h * w], np.int64))], name)
    ones = b.constant(f"{name}/window", np.ones((1, 1, op.size, 1), np.float32))
    summed = b.add("Conv", [column, ones], name, kernel_shape=[op.size, 1], pads=[before, 0, after, 0])
    summed = b.add("Reshape", [summed, b.constant(f"{name}/as_image", np.asarray([-1, c, h, w], np.int64))], name)
    scaled = b.add("Mul", [summed, b.constant(f"{name}/alpha", np.float32(op.alpha / op.size))], name)
    base = b.add("Add", [scaled, b.constant(f"{name}/k", np.float32(op.k))], name)
    return b.add("Div", [x, b.add("Pow", [base, b.constant(f"{name}/beta", np.float32(op.beta))], name)], name)


def onnx_of_run(spec: Any, run_dir: Any, bindings: dict[str, Any] | None = None, checkpoint: str = "best") -> Any:
    """The ONNX model of a training run's checkpoint, its input normalization built in (raw pixels in)."""
    import json

    from cnndsl.lang.version import __version__
    from cnndsl.training import load_run

    loaded = load_run(spec, run_dir, checkpoint, bindings)
    meta = {"producer": f"cnndsl {__version__}", "network": loaded.net.report.name, "step": loaded.step,
            "input": "NHWC float32, raw pixels as the run's dataset stores them", "output": "the network's output",
            "classes": loaded.classes}
    return to_onnx(loaded.net.report, loaded.net.arrays(loaded.module()), loaded.preprocess, doc=json.dumps(meta))


def onnx_of_seed(report: Any, seed: int) -> Any:
    """The ONNX model of a network with the parameters `cnndsl.compile(...).init(seed)` gives it."""
    import json

    from cnndsl.lang.version import __version__
    from cnndsl.nn.compiler import CompiledNetwork

    net = CompiledNetwork(report)
    arrays = net.arrays(net.init(seed))
    meta = {"producer": f"cnndsl {__version__}", "network": report.name, "seed": seed,
            "input": "NHWC float32, the network's inputs (no normalization)", "output": "the network's output"}
    return to_onnx(report, arrays, None, doc=json.dumps(meta))
