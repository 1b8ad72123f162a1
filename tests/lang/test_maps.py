"""Named feature maps (`-> @name`, `@name`) and several outputs (`head`, `training head`): what they build,
what they refuse, and how the table, the diagram, the Flax module and ONNX show them."""

from __future__ import annotations

import re

import numpy as np
import pytest

import cnndsl
from cnndsl.lang.errors import CnnError
from tests.tolerances import NETWORK_CLOSE


def net(body: str, input: str = "16x16x3") -> cnndsl.Report:
    return cnndsl.check(f"network T\ninput {input}\n{body}\n")


def wiring(report: cnndsl.Report) -> list[tuple[str, tuple[int, ...]]]:
    """Each node's op and inputs: two specs that build the same graph have the same wiring."""
    return [(node.op.label(), node.inputs) for node in report.graph.nodes]


def arrays_of(model: object) -> dict[str, np.ndarray]:
    """The module's parameters and statistics by name, as ONNX export takes them."""
    from flax import nnx

    from cnndsl.nn.flax_backend import flatten_state

    return {k: np.asarray(v) for k, v in flatten_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))[2].items()}


def error(body: str, input: str = "16x16x3") -> CnnError:
    with pytest.raises(CnnError) as caught:
        net(body, input)
    return caught.value


UNET = """
block double(c) = conv(c, 3x3, pad=same) -> relu -> conv(c, 3x3, pad=same) -> relu
block up(c, skip) = conv_transpose(c, 2x2, stride=2) -> concat(skip | identity) -> double(c)
input -> double(4) -> @e1 -> maxpool(2x2) -> double(8) -> @e2 -> maxpool(2x2) -> double(16)
      -> up(8, @e2) -> up(4, @e1) -> conv(2, 1x1)
"""


def test_a_named_map_read_later_builds_the_same_graph_as_the_branch_form() -> None:
    named = net("input -> conv(8, 3x3, pad=same) -> @a -> relu -> conv(8, 3x3, pad=same) -> add(@a | identity) -> fc(2)")
    branch = net("input -> conv(8, 3x3, pad=same) -> add(identity | relu -> conv(8, 3x3, pad=same)) -> fc(2)")
    assert [w for w, _ in wiring(named)] == [w for w, _ in wiring(branch)]
    add = next(node for node in named.graph.nodes if node.op.kind == "add")
    first_conv = next(node for node in named.graph.nodes if node.op.kind == "conv")
    assert first_conv.id in add.inputs and add.inputs[1] == add.id - 1
    assert named.params == branch.params and named.macs == branch.macs


def test_long_skips_of_a_unet_join_the_encoder_maps_of_their_level() -> None:
    report = net(UNET)
    taps = {tap.name: tap.node for tap in report.graph.taps}
    concats = [node for node in report.graph.nodes if node.op.kind == "concat"]
    assert [c.inputs[0] for c in concats] == [taps["e2"], taps["e1"]]
    shapes = report.node_shapes
    assert [shapes[c.id] for c in concats] == [(8, 8, 16), (16, 16, 8)]
    assert report.output_shape == (16, 16, 2)
    # the table says which named map each join reads
    table = report.render_table()
    assert "concat (with @e2)" in table and "concat (with @e1)" in table and "up(8, @e2)" in table


def test_maps_named_inside_a_block_belong_to_each_call() -> None:
    report = net("block res(c) = conv(c, 3x3, pad=same) -> @t -> relu -> add(@t | identity)\n"
                 "input -> res(4) -> res(4) -> [conv(4, 1x1) -> @t -> relu -> add(@t | identity)]*2 -> fc(2)")
    convs = [node.id for node in report.graph.nodes if node.op.kind == "conv"]
    adds = [node for node in report.graph.nodes if node.op.kind == "add"]
    assert [add.inputs[0] for add in adds] == convs  # each add reads the conv just before it, in each call and step


def test_input_and_let_bound_reads() -> None:
    report = net("let skip = @e\ninput -> conv(3, 3x3, pad=same) -> @e -> relu -> concat(@input | skip | identity) -> fc(2)")
    concat = next(node for node in report.graph.nodes if node.op.kind == "concat")
    assert concat.inputs[:2] == (0, 1) and report.node_shapes[concat.id] == (16, 16, 9)


def test_a_map_not_named_before_is_a_located_error_with_the_fix() -> None:
    line = "input -> conv(4, 3x3) -> @enc1 -> relu -> add(@enc2 | identity) -> fc(2)"
    (d,) = error(line).diagnostics
    assert d.kind == "name" and "`@enc2`" in d.message and d.help == "did you mean `@enc1`?"
    assert (d.span.line, d.span.col) == (3, line.index("@enc2") + 1)
    # a block's body sees only its own maps: the fix is to pass the map
    err = error("block b(c) = conv(c, 3x3, pad=same) -> add(@x | identity)\n"
                "input -> conv(4, 3x3, pad=same) -> @x -> b(4) -> fc(2)")
    assert "pass `@x` to it" in err.diagnostics[0].help and err.diagnostics[0].span.line == 3
    # `@input` is taken
    err = error("input -> conv(4, 3x3) -> @input -> fc(2)")
    assert err.kinds == ("name",) and "network's input" in err.diagnostics[0].message


def test_a_dropped_map_is_reported_at_the_layer_nobody_reads() -> None:
    line = "input -> conv(4, 3x3, pad=same) -> @a -> relu -> conv(4, 1x1) -> [@a -> conv(2, 1x1)] -> fc(2)"
    (d,) = error(line).diagnostics
    assert d.kind == "unused" and "`conv(4, 1x1)`" in d.message and "-> @x" in d.help
    assert d.span.col == line.index("conv(4, 1x1)") + 1


def test_joins_of_maps_from_different_depths_name_both_shapes_and_the_map() -> None:
    err = error("input -> conv(4, 3x3, pad=same) -> @a -> maxpool(2x2) -> conv(4, 3x3, pad=same) -> add(@a | identity)")
    (d,) = err.diagnostics
    assert d.kind == "shape" and "16x16x4" in d.message and "8x8x4" in d.message
    assert any(note.startswith("branch 1 is `@a`, named at line 3") for note in d.notes)
    err = error(UNET.replace("-> maxpool(2x2) -> double(16)", "-> double(16)"))
    text = str(err)
    assert "branch 1 gives 8x8x8" in text and "branch 2 gives 16x16x8" in text and "branch 1 is `@e2`" in text


def test_the_flax_module_and_onnx_compute_a_unet() -> None:
    ort = pytest.importorskip("onnxruntime")
    from cnndsl.emit.onnx_model import to_onnx

    compiled = cnndsl.compile(f"network T\ninput 16x16x3\n{UNET}")
    model = compiled.init(0)
    x = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)
    out = np.asarray(model(x))
    every = model(x, all_outputs=True)
    # the decoder's first concat is [e2 | upsampled]: its first 8 channels are e2's exactly
    e2 = compiled.report.graph.nodes[{t.name: t.node for t in compiled.report.graph.taps}["e2"]].name
    concat = next(node.name for node in compiled.report.graph.nodes if node.op.kind == "concat")
    np.testing.assert_array_equal(np.asarray(every[concat])[..., :8], np.asarray(every[e2]))
    proto = to_onnx(compiled.report, arrays_of(model))
    session = ort.InferenceSession(proto.SerializeToString())
    np.testing.assert_allclose(session.run(None, {"input": x})[0], out, **NETWORK_CLOSE)  # ~10 layers, outputs ~1


def test_long_skips_are_drawn_as_lanes_and_every_layer_once() -> None:
    from cnndsl.emit.diagram import to_svg

    svg = to_svg(net(UNET))
    lanes = re.findall(r'<path class="edge skip" d="M[^"]* L[^"]* L[^"]* L[^"]*"', svg)
    assert len(lanes) == 2 and "@e1" in svg and "@e2" in svg
    # a graph that is not series-parallel: maps read across each other
    crossing = net("input -> conv(4, 3x3, pad=same) -> @a -> relu -> @b -> conv(4, 1x1) -> add(@a | identity)"
                   " -> add(@b | identity) -> concat(@input | identity) -> fc(2)")
    svg = to_svg(crossing)
    assert svg.count('<g class="node') == len(crossing.graph.nodes)


# ---- several outputs ----------------------------------------------------------------------------------------

HEADS = """input -> conv(8, 3x3, pad=same) -> relu -> @early -> conv(8, 3x3, pad=same) -> relu -> global_avgpool -> fc(5)
training head aux = @early -> global_avgpool -> fc(5)
head probs = softmax
train aux weight = 0.3
"""


def test_heads_are_outputs_and_training_only_ones_leave_the_inference_cost() -> None:
    report = net(HEADS)
    aux, probs = report.graph.heads
    assert (aux.name, aux.training_only, probs.name, probs.training_only) == ("aux", True, "probs", False)
    assert report.node_shapes[aux.node] == (5,) and report.node_shapes[probs.node] == (5,)
    aux_rows = [r for r in report.rows if r.path and r.path[0].label == "head aux"]
    assert [r.op for r in aux_rows] == ["global_avgpool", "fc(5)"]
    every = sum(r.macs for r in report.rows)
    assert report.macs == every - sum(r.macs for r in aux_rows) and report.params == sum(r.params for r in report.rows)
    costs = {h["name"]: h for h in report.head_costs()}
    assert costs["aux"]["params"] == 8 * 5 + 5 and costs["aux"]["macs"] == 16 * 16 * 8 * 0 + 8 * 5
    assert dict(report.train_settings)["head_weights"] == ("aux=0.3",)
    assert "head aux (training only): output 5" in report.totals_text()
    assert report.to_dict()["heads"][0]["training_only"] is True


def test_head_mistakes_are_located() -> None:
    assert error(HEADS + "head aux = fc(3)").kinds == ("duplicate",)
    assert error(HEADS.replace("train aux weight", "train auxx weight")).diagnostics[0].help == "did you mean `aux`?"
    assert error(HEADS.replace("aux weight = 0.3", "aux epochs = 3")).kinds == ("train",)
    err = error(HEADS + "tranning head x = fc(3)")
    assert err.kinds == ("syntax",) and "training head NAME" in err.diagnostics[0].help
    # `head` and `training` stay ordinary names anywhere but a statement's start
    assert net("block head(c) = fc(c)\nlet training = 4\ninput -> head(training)").output_shape == (4,)


def test_the_module_runs_training_only_heads_only_when_asked_and_onnx_leaves_them_out() -> None:
    ort = pytest.importorskip("onnxruntime")
    from cnndsl.emit.onnx_model import to_onnx

    compiled = cnndsl.compile(f"network T\ninput 16x16x3\n{HEADS}")
    model = compiled.init(0)
    x = np.random.default_rng(1).random((3, 16, 16, 3), np.float32)
    outputs = model(x, heads=True)
    assert set(outputs) == {"main", "aux", "probs"}
    np.testing.assert_array_equal(np.asarray(outputs["main"]), np.asarray(model(x)))
    proto = to_onnx(compiled.report, arrays_of(model))
    assert [o.name for o in proto.graph.output] == ["output", "probs"]
    assert not any(init.name.startswith(("fc2", "global_avgpool2")) for init in proto.graph.initializer)
    main, probs = ort.InferenceSession(proto.SerializeToString()).run(None, {"input": x})
    np.testing.assert_allclose(main, np.asarray(outputs["main"]), **NETWORK_CLOSE)  # 4 layers, outputs ~1
    np.testing.assert_allclose(probs, np.asarray(outputs["probs"]), **NETWORK_CLOSE)


def test_heads_are_drawn_below_with_a_lane_from_the_map_they_start_at() -> None:
    from cnndsl.emit.diagram import to_svg

    report = net(HEADS)
    svg = to_svg(report)
    assert svg.count('<g class="node') == len(report.graph.nodes)  # every layer once, heads included
    lanes = re.findall(r'<path class="edge skip" d="M[^"]* L[^"]* L[^"]* L[^"]*"', svg)
    assert len(lanes) == 2 and "@early" in svg  # aux from @early, probs from the main output
    assert "head aux" in svg and "head probs" in svg


# ---- resize to a size or to a named map's size -----------------------------------------------------------

def _interpolate_reference(x: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """PyTorch's interpolate(size=..., align_corners=False) written out per output pixel in float64 (its
    CPU kernels' formulas: upsample_nearest2d's nearest_idx, upsample_bilinear2d's source index)."""
    (_, h, w, _), (oh, ow) = x.shape, size
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            if mode == "nearest":
                out[:, i, j] = x[:, min(int(i * h / oh), h - 1), min(int(j * w / ow), w - 1)]
                continue
            si, sj = max((i + 0.5) * h / oh - 0.5, 0.0), max((j + 0.5) * w / ow - 0.5, 0.0)
            i0, j0 = int(si), int(sj)
            i1, j1 = min(i0 + 1, h - 1), min(j0 + 1, w - 1)
            a, b = si - i0, sj - j0
            out[:, i, j] = ((1 - a) * ((1 - b) * x[:, i0, j0] + b * x[:, i0, j1])
                            + a * ((1 - b) * x[:, i1, j0] + b * x[:, i1, j1]))
    return out


SIZES = [((5, 7), (11, 3)), ((8, 8), (16, 16)), ((13, 9), (4, 20)), ((3, 3), (7, 5)), ((32, 24), (7, 9))]


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_resize_is_pytorchs_interpolate_with_its_gradient(mode: str) -> None:
    import jax
    import jax.numpy as jnp

    from cnndsl.nn.flax_backend import resize

    rng = np.random.default_rng(3)
    for (h, w), size in SIZES:
        x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
        ours = np.asarray(resize(jnp.asarray(x), size, mode))
        # float32 source coordinates up to 32 carry up to 32 * 2**-24 of error, times neighbour differences of
        # up to ~4 (standard normal inputs): 8e-6; nearest picks the same pixels (exact)
        np.testing.assert_allclose(ours, _interpolate_reference(x, size, mode), rtol=0, atol=1e-5 if mode == "bilinear" else 0)
        # the gradient is the adjoint: <resize(x), g> = <x, resize^T(g)>, checked against the reference map's matrix
        g = rng.normal(size=ours.shape)
        grad = np.asarray(jax.grad(lambda v: jnp.sum(resize(v, size, mode) * g))(jnp.asarray(x)))
        basis = np.eye(h * w).reshape(h * w, h, w, 1)
        matrix = _interpolate_reference(basis, size, mode).reshape(h * w, -1)  # input pixel -> outputs
        expected = np.einsum("po,boc->bpc", matrix, g.reshape(2, -1, 3)).reshape(x.shape)
        np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-5)
    torch = pytest.importorskip("torch")
    for (h, w), size in SIZES:
        x = rng.normal(size=(1, h, w, 2)).astype(np.float32)
        theirs = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size, mode=mode,
                                                 **({} if mode == "nearest" else {"align_corners": False}))
        np.testing.assert_allclose(np.asarray(resize(jnp.asarray(x), size, mode)),
                                   theirs.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-5 if mode == "bilinear" else 0)


def test_resize_to_a_named_maps_size_checks_runs_and_exports() -> None:
    ort = pytest.importorskip("onnxruntime")
    from cnndsl.emit.onnx_model import to_onnx

    spec = ("input -> conv(4, 3x3, stride=2, pad=1) -> relu -> @half -> conv(6, 3x3, stride=2, pad=1)"
            " -> resize(@half, mode=bilinear) -> concat(@half | identity) -> conv(3, 1x1) -> resize(@input)"
            " -> resize(5x9)")
    report = net(spec, input="17x15x3")
    resizes = [(r.op, r.output_shape) for r in report.rows if r.op.startswith("resize")]
    assert resizes == [("resize(9x8, mode=bilinear)", (9, 8, 6)), ("resize(17x15)", (17, 15, 3)),
                       ("resize(5x9)", (5, 9, 3))]
    compiled = cnndsl.compile(f"network T\ninput 17x15x3\n{spec}")
    model = compiled.init(0)
    x = np.random.default_rng(4).normal(size=(2, 17, 15, 3)).astype(np.float32)
    proto = to_onnx(compiled.report, arrays_of(model))
    got = ort.InferenceSession(proto.SerializeToString()).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, np.asarray(model(x)), **NETWORK_CLOSE)
    err = error("input -> conv(4, 3x3) -> global_avgpool -> @v -> fc(4) -> resize(@v)")
    assert err.kinds == ("shape",) and "`@v`" in err.diagnostics[0].message
    assert error("input -> conv(4, 3x3) -> resize(@nope)").kinds == ("name",)
