"""Pretrained weights in: tensors of another framework's file paired with a spec's layers.

    pairs = pair_layers(report, read_tensors("resnet18.safetensors"))   # or a stop naming both sides
    arrays = converted(pairs)                                           # cnndsl names -> numpy arrays

Files: safetensors (read with the `safetensors` package's numpy API; no torch needed), and `.pth`/`.pt`
only when torch is installed, with `torch.load(weights_only=True)`: never an unrestricted pickle.

Pairing: the spec's layers with parameters (conv, bn, fc and linear, ln, layer_scale), in execution order, each
take the file's first unused layer of the same kind whose arrays have the spec layer's shapes (after the layout conversion). A
file layer is the tensors sharing a name prefix (`layer1.0.conv1.weight` -> `layer1.0.conv1`); its kind
comes from its tensors (running statistics: batch norm; a 4-D weight: conv; 2-D: fully connected, for `fc` and
`linear`; 1-D: layer norm; a lone per-channel tensor such as torchvision's `layer_scale`: a layer scale). "First"
is the file's order for a PyTorch state dict (the modules' registration order, which torchvision and timm
keep equal to execution order); safetensors stores none: there the order is guessed from the names, part by part, a
part's number before its text (`features.conv0`, `features.norm0`, `features.denseblock1`,
`features.transition1`, ...; `layer1.0.conv2` before `layer1.1.conv1`; `downsample` after `conv2`), a stem
first and a classifier head last (`natural_key`), which is torchvision's and timm's registration order for the
examples tested. `--dry-run` shows the pairing; a .pth state dict keeps the true order. A spec layer with no candidate stops
the import naming it and the file's next unused layer of its kind; file layers left over stop it too.

Layouts (`mapping`):
- `torch` (torchvision, timm): conv OIHW -> HWIO (transpose 2, 3, 1, 0); linear (out, in) -> (in, out);
  the first fc after a feature map re-ordered from C, H, W flattening to cnndsl's H, W, C; batch norm
  weight, bias, running_mean, running_var -> scale, bias, mean, var (num_batches_tracked ignored).
- `keras`: kernels are already HWIO and (in, out), flattening is H, W, C; gamma, beta, moving_mean,
  moving_variance -> scale, bias, mean, var.
`auto` tells them apart by the batch-norm names (running_* or moving_*), else by a 4-D kernel's layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnndsl.lang import ir



class WeightsError(Exception):
    """Weights that cannot be read or do not fit the spec; the message names both sides."""


class Tensors(dict):
    """A file's tensors by name; `ordered` when their order is the order they were written in (a PyTorch
    state dict's), not natural name order (safetensors keeps none); `converted` names the floating-point
    types the file held that were widened to float32 ({"bfloat16": 62})."""

    ordered: bool = False
    converted: dict[str, int]


#: The largest magnitude a weight may have. Trained weights and batch-norm statistics stay many orders of
#: magnitude below it; a larger one overflows float32 activations within a layer or two (and anything
#: beyond float32's 3.4e38 is infinite once converted), so such a file is damaged or not weights.
MAX_WEIGHT = 1e8
#: How much a .pth's zip members may inflate: torch.save stores tensors uncompressed (ratio 1), so a member
#: that inflates more was not written by it, and a zip bomb must not be unpacked to be refused.
MAX_INFLATION = 4


def read_tensors(path: str | Path) -> Tensors:
    """The tensors of a safetensors file (or, with torch installed, a .pth/.pt state dict), in file order,
    floating-point ones as float32 (bfloat16 and float16 widened exactly, float64 rounded), each checked
    to be finite and at most MAX_WEIGHT in magnitude (a WeightsError naming the tensor otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    tensors = _read_torch(path) if path.suffix in (".pth", ".pt", ".bin") else _read_safetensors(path)
    tensors.converted = {}
    for name, array in tensors.items():
        if not np.issubdtype(array.dtype, np.floating) and "float" not in array.dtype.name:
            continue
        if array.dtype != np.float32:
            tensors.converted[array.dtype.name] = tensors.converted.get(array.dtype.name, 0) + 1
        with np.errstate(over="ignore"):
            wide = np.asarray(array, np.float64)
        bad = ~np.isfinite(wide) | (np.abs(wide) > MAX_WEIGHT)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise WeightsError(f"{path}: tensor {name} holds {float(wide[where])!r} at index {where}: weights must be "
                               f"finite and at most {MAX_WEIGHT:.0e} in magnitude; the file is damaged or not "
                               "trained weights")
        tensors[name] = wide.astype(np.float32)
    return tensors


def _read_safetensors(path: Path) -> Tensors:
    try:
        import ml_dtypes  # noqa: F401 - registers bfloat16 and float8 with numpy, which safetensors' numpy API needs
        from safetensors import safe_open
    except ImportError:
        raise WeightsError("reading safetensors needs the safetensors package: pip install 'cnndsl[weights]'") from None
    try:
        with safe_open(str(path), framework="np") as file:
            # safetensors keeps no order (it lays tensors out by dtype, then name): guess it from the names
            return Tensors({name: file.get_tensor(name) for name in sorted(file.keys(), key=natural_key)})
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise WeightsError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from None


#: Unnumbered name parts that model zoos register first (a stem) or last (a classifier head).
STEM_PARTS = {"stem", "conv_stem", "stem_conv", "patch_embed", "embed"}
HEAD_PARTS = {"classifier", "head", "heads", "fc", "logits", "predictions", "last_linear"}


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """The order model zoos register modules in, guessed from names: part by part, a stem first
    (`stem`, `patch_embed`), then numbered parts by their number (`features.norm0` before
    `features.denseblock1`, `layer2.10` after `layer2.9`, `transition1` before `denseblock2`), then
    other parts by text (`downsample` after `conv2`), a classifier head last (`classifier` after
    `features`, `head` after `stages`). Only the order among layers of one kind matters to pairing."""
    key = []
    for part in name.split("."):
        match = re.search(r"\d+", part)
        if match:
            key.append((1, int(match.group()), part))
        else:
            key.append((0 if part in STEM_PARTS else 3 if part in HEAD_PARTS else 2, 0, part))
    return tuple(key)


def _read_torch(path: Path) -> Tensors:
    _check_inflation(path)  # before torch: a zip bomb is refused whether or not torch is installed
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: reading .pth/.pt files needs torch; convert it to safetensors, or install torch "
                           "(it is loaded with weights_only=True, never as an arbitrary pickle)") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch's unpickler refuses anything but tensors and containers
        raise WeightsError(f"{path}: not a plain state dict of tensors ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    tensors = Tensors({k: (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()  # numpy has no bf16
                       for k, v in state.items() if hasattr(v, "detach")})
    tensors.ordered = True
    return tensors


def _check_inflation(path: Path) -> None:
    """A WeightsError when a .pth (a zip, since PyTorch 1.6) has members that inflate more than
    MAX_INFLATION times, read from its directory before anything is unpacked."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy format: tensors stored as they are, no larger than the file
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.file_size > MAX_INFLATION * max(member.compress_size, 1 << 16):
                    raise WeightsError(f"{path}: {member.filename} inflates {member.compress_size:,} bytes to "
                                       f"{member.file_size:,}; torch.save stores tensors uncompressed, so this file "
                                       "was not written by it (refused unread)")
    except zipfile.BadZipFile as err:
        raise WeightsError(f"{path}: not a readable PyTorch file ({err})") from None


@dataclass(frozen=True)
class FileLayer:
    """One layer of the weights file: its name prefix, kind (conv, bn, fc) and tensors by short name."""

    name: str
    kind: str
    tensors: dict[str, np.ndarray]


@dataclass(frozen=True)
class SpecLayer:
    """One layer of the spec with parameters: node name, kind, its input shape, its arrays' shapes, and how
    messages name it (`conv3 conv(64, 3x3) at line 12`)."""

    name: str
    kind: str
    in_shape: tuple[int, ...]
    shapes: dict[str, tuple[int, ...]]
    where: str
    head: str | None = None  # the `head NAME` it belongs to, if any


@dataclass(frozen=True)
class Pair:
    """A spec layer and the file layer it takes its arrays from, converted to cnndsl's layout."""

    spec: SpecLayer
    file: FileLayer
    arrays: dict[str, np.ndarray]


_BN_NAMES = {"torch": {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"},
             "keras": {"gamma": "scale", "beta": "bias", "moving_mean": "mean", "moving_variance": "var"}}
_IGNORED = {"num_batches_tracked"}


def file_layers(tensors: dict[str, np.ndarray]) -> list[FileLayer]:
    """The file's tensors grouped by layer, in file order, each with its kind."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, tensor in tensors.items():
        prefix, _, short = re.sub(r":0$", "", name).rpartition("." if "." in name else "/")
        if short in _IGNORED:
            continue
        groups.setdefault(prefix, {})[short] = np.asarray(tensor)
    layers = []
    for prefix, group in groups.items():
        weight = group.get("weight", group.get("kernel"))
        if {"running_mean", "running_var"} & group.keys() or {"moving_mean", "moving_variance"} & group.keys():
            kind = "bn"
        elif weight is not None:
            kind = {4: "conv", 2: "fc", 1: "ln"}.get(weight.ndim, "other")  # 1-D: a layer norm's weight
        elif {"gamma", "beta"} <= group.keys():
            kind = "ln"  # Keras's LayerNormalization
        elif len(group) == 1 and np.squeeze(next(iter(group.values()))).ndim == 1:
            kind = "scale"  # one per-channel vector: torchvision's `layer_scale` (C, 1, 1), timm's `gamma` (C,)
        else:
            kind = "other"
        layers.append(FileLayer(prefix, kind, group))
    return [layer for layer in layers if layer.kind != "other" or layer.tensors]


#: The kind of each spec layer with arrays, and (`FILE_KIND`) the kind of file layer it takes them from.
SPEC_KINDS = {ir.Conv: "conv", ir.ConvTranspose: "conv_transpose", ir.BatchNorm: "bn", ir.Dense: "fc",
              ir.Linear: "linear", ir.LayerNorm: "ln", ir.LayerScale: "scale"}
FILE_KIND = {"linear": "fc", "conv_transpose": "conv"}  # a file's 4-D weights: which, its shapes decide


def spec_layers(report: Any) -> list[SpecLayer]:
    """The spec's layers with parameters, in execution order."""
    from cnndsl.lang.costs import parameter_shapes

    shapes = report.node_shapes
    layers = []
    for node in report.graph.nodes[1:]:
        kind = SPEC_KINDS.get(type(node.op))
        if kind is None:
            continue
        in_shape = tuple(shapes[node.inputs[0]])
        arrays = {name.split("/", 1)[1]: tuple(shape)
                  for name, shape in parameter_shapes(node.op, in_shape, node.name).items()}
        head = next((h.name for h in report.graph.heads if node.path and node.path[0].label == f"head {h.name}"), None)
        layers.append(SpecLayer(node.name, kind, in_shape, arrays,
                                f"{node.name} {node.op.label()} at {node.location(report.graph.source)}", head))
    return layers


def detect_mapping(tensors: dict[str, np.ndarray]) -> str:
    """`torch` or `keras`, from the tensors' names."""
    names = " ".join(tensors)
    if "moving_mean" in names or "/kernel" in names:
        return "keras"
    if "gamma" in names and not any(name.endswith(".weight") for name in tensors):  # timm's layer scale: `gamma`
        return "keras"
    return "torch"


def pair_layers(report: Any, tensors: dict[str, np.ndarray], mapping: str = "auto", strict: bool = True
                ) -> list[Pair]:
    """Every spec layer paired with the file's first unused layer that fits, arrays converted; a
    WeightsError at the first spec layer nothing fits, naming both sides, or for file layers left over.
    Not `strict` (fine-tuning): such spec layers are left out (they start fresh) and leftovers ignored."""
    layout = detect_mapping(tensors) if mapping == "auto" else ("keras" if mapping == "keras" else "torch")
    wanted, found = spec_layers(report), file_layers(tensors)
    unused = list(found)
    pairs: list[Pair] = []
    owner = _head_owner([h.name for h in report.graph.heads], found)
    for index, spec in enumerate(wanted):
        candidates = [f for f in unused if f.kind == FILE_KIND.get(spec.kind, spec.kind)
                      and (owner is None or owner(f) == spec.head)]
        match = next(((f, arrays) for f in candidates if _fits(spec, arrays := _convert(spec, f, layout))), None)
        if match is None and not strict:
            continue
        if match is None:
            need = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in spec.shapes.items())
            other = (f"the file's next {spec.kind}, {candidates[0].name}, has {_shapes_text(candidates[0].tensors)}"
                     if candidates else f"the file has no {spec.kind} layer left")
            raise WeightsError(f"layer {index + 1} of the spec, {spec.where}, needs {need}; no layer of the file fits "
                               f"({other}; {layout} layout)")
        file, arrays = match
        unused.remove(file)
        pairs.append(Pair(spec, file, {k: arrays[k] for k in spec.shapes}))
    if unused and strict:
        extra = ", ".join(f"{layer.name} ({_shapes_text(layer.tensors)})" for layer in unused[:3])
        raise WeightsError(f"{len(unused)} layer{'s' * (len(unused) > 1)} of the file fit no layer of the spec: {extra}"
                           f"{', ...' if len(unused) > 3 else ''}; is it another network?")
    return pairs


def _head_owner(heads: list[str], found: list[FileLayer]) -> Any:
    """Which head a file layer belongs to, by its first name part: the head's name, or the name followed by `_`
    (torchvision's GoogLeNet `aux1.conv.conv`, its FCN `aux_classifier.0` for a head `aux`); None for the main
    network's layers. A head's layers then pair only with its own (GoogLeNet's auxiliary 1x1 convolution and
    last fc have the shapes of main layers: order alone would cross them). None when no file layer is named
    after a head: pairing by order and shape alone, as for a network without heads."""
    def owner(layer: FileLayer) -> str | None:
        first = re.split(r"[./]", layer.name, maxsplit=1)[0]
        return next((h for h in heads if first == h or first.startswith(h + "_")), None)

    return owner if heads and any(owner(layer) is not None for layer in found) else None


def _fits(spec: SpecLayer, arrays: dict[str, np.ndarray]) -> bool:
    return all(k in arrays and tuple(arrays[k].shape) == shape for k, shape in spec.shapes.items())


def _shapes_text(tensors: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in tensors.items())


def _convert(spec: SpecLayer, file: FileLayer, layout: str) -> dict[str, np.ndarray]:
    t = file.tensors
    if spec.kind == "bn":
        names = _BN_NAMES[layout]
        return {names[k]: v.astype(np.float32) for k, v in t.items() if k in names}
    if spec.kind == "ln":
        names = {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"}
        return {names[k]: v.astype(np.float32) for k, v in t.items() if k in names}
    if spec.kind == "scale":
        return {"scale": np.squeeze(next(iter(t.values()))).astype(np.float32).reshape(-1)}
    weight = t.get("weight", t.get("kernel"))
    out: dict[str, np.ndarray] = {}
    if "bias" in t:
        out["bias"] = t["bias"].astype(np.float32)
    if weight is None:
        return out
    weight = weight.astype(np.float32)
    if layout == "keras":  # Conv2DTranspose keeps (kh, kw, out, in)
        out["kernel"] = weight.transpose(0, 1, 3, 2) if spec.kind == "conv_transpose" else weight
        return out
    if spec.kind == "conv_transpose":
        out["kernel"] = weight.transpose(2, 3, 0, 1)  # PyTorch's (in, out/groups, kh, kw) -> (kh, kw, in, out/groups)
        return out
    if spec.kind == "conv":
        out["kernel"] = weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        return out
    kernel = weight.T  # (out, in) -> (in, out)
    if spec.kind == "fc" and len(spec.in_shape) == 3 and kernel.shape[0] == int(np.prod(spec.in_shape)):
        h, w, c = spec.in_shape  # PyTorch flattened C, H, W; cnndsl flattens H, W, C
        kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)
    out["kernel"] = kernel
    return out


def converted(pairs: list[Pair]) -> dict[str, np.ndarray]:
    """The pairs' arrays by cnndsl's names (`conv1/kernel`, `bn1/mean`)."""
    return {f"{p.spec.name}/{short}": array for p in pairs for short, array in p.arrays.items()}


def pairing_table(pairs: list[Pair]) -> str:
    """One line per pair: the spec's layer, the file's, and the shapes taken."""
    rows = [("spec layer", "file layer", "arrays")]
    for p in pairs:
        rows.append((p.spec.where.rsplit(" at ", 1)[0], p.file.name,
                     ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in p.arrays.items())))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows) + "\n"
