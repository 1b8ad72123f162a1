"""The language, construct by construct: what each one expands to and the shapes it produces."""

from __future__ import annotations

import pytest

import cnndsl
from cnndsl.lang import nodes as n
from cnndsl.lang.errors import CnnError


def net(body: str, input: str = "32x32x3", **bindings: object) -> cnndsl.Report:
    return cnndsl.check(f"network T\ninput {input}\n{body}\n", set=bindings or None)


def ops(report: cnndsl.Report) -> list[str]:
    return [r.op for r in report.rows]


def kinds_of(body: str, **bindings: object) -> tuple[str, ...]:
    with pytest.raises(CnnError) as caught:
        net(body, **bindings)
    return caught.value.kinds


def test_course_pattern_parses_exactly_as_written() -> None:
    program = cnndsl.parse("INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC")
    (main,) = program.statements
    assert isinstance(main, n.Main) and isinstance(main.body, n.Chain)
    first, outer, head, last = main.body.items
    assert isinstance(first, n.InputRef)
    assert isinstance(outer, n.BinOp) and outer.op == "*" and outer.right == n.Name(outer.right.span, "M")
    inner_chain = outer.left.body
    assert isinstance(inner_chain.items[1], n.Optional) and inner_chain.items[1].target.id == "POOL"
    assert isinstance(last, n.Name) and last.id == "FC"


def test_keywords_and_builtins_are_case_insensitive() -> None:
    upper = cnndsl.check("NETWORK T\nINPUT 8x8X1\nLET C = CONV(4, 3X3, PAD=SAME)\nINPUT -> C -> RELU -> FC(2)")
    lower = cnndsl.check("network T\ninput 8x8x1\nlet C = conv(4, 3x3, pad=same)\ninput -> C -> relu -> fc(2)")
    assert ops(upper) == ops(lower) and upper.params == lower.params


def test_user_names_are_case_sensitive_and_shadow_nothing_builtin() -> None:
    report = net("let CONV = conv(8, 3x3)\ninput -> CONV -> conv(4, 1x1) -> fc(2)")
    assert ops(report)[:2] == ["conv(8, 3x3)", "conv(4, 1x1)"]


def test_newlines_continue_inside_brackets_and_around_arrows() -> None:
    report = net("input -> conv(8,\n   3x3)\n  -> relu ->\n fc(2)")
    assert ops(report) == ["conv(8, 3x3)", "relu", "fc(2)"]
    with pytest.raises(CnnError):
        net("input -> conv(8, 3x3)\nrelu")  # a new statement, and not a valid one


def test_comments_and_blank_lines() -> None:
    report = net("# a comment\n\nlet W = 8  # trailing\n\ninput -> conv(W, 3x3) # end\n")
    assert ops(report) == ["conv(8, 3x3)"]


def test_arithmetic_in_arguments() -> None:
    report = net("let c = 4\ninput -> conv(c * 2 + 1, (c - 1) * 1) -> conv(2**3, 1x1) -> conv(c // 3 + c % 3, 1)")
    assert [r.output_shape[-1] for r in report.rows] == [9, 8, 2]
    assert report.rows[0].op == "conv(9, 3x3)"


def test_repetition_index_and_per_stage_counts() -> None:
    report = net("let depths = (1, 2, 3)\n"
                 "input -> [[conv(8 * 2**i, 3x3, pad=same) -> relu]*depths[i] -> maxpool(2x2)]*3 as i")
    convs = [r for r in report.rows if r.op.startswith("conv")]
    assert [r.output_shape[-1] for r in convs] == [8, 16, 16, 32, 32, 32]
    assert report.rows[0].path[0].label == "[…]*3 i=0"


def test_repetition_count_zero_is_no_layers() -> None:
    assert ops(net("input -> conv(4, 1x1) -> [relu]*0 -> fc(2)")) == ["conv(4, 1x1)", "fc(2)"]


def test_repetition_of_a_bare_layer_either_side() -> None:
    assert ops(net("input -> relu*2 -> 2*[relu] -> fc(2)")) == ["relu"] * 4 + ["fc(2)"]


def test_optional_part_bound_in_file_or_from_the_command_line() -> None:
    body = "let POOL = maxpool(2x2)\nlet POOL? = false\ninput -> conv(4, 3x3) -> POOL? -> fc(2)"
    assert "maxpool(2x2)" not in ops(net(body))
    assert "maxpool(2x2)" in ops(net(body, **{"POOL?": True}))


def test_conditional_layers_and_values() -> None:
    report = net("input -> [conv(4, 3x3, stride=2 if i == 0 else 1, pad=same) -> maxpool(2x2) if i < 1]*2 as i")
    assert ops(report) == ["conv(4, 3x3, stride=2, pad=same)", "maxpool(2x2)", "conv(4, 3x3, pad=same)"]
    assert report.output_shape == (8, 8, 4)


def test_boolean_logic() -> None:
    report = net("let a = 3\ninput -> relu if a > 2 and not a == 4 or false else tanh")
    assert ops(report) == ["relu"]


def test_block_arguments_defaults_and_keywords() -> None:
    report = net("block unit(c, k=3, act=relu) = conv(c, k, pad=same) -> act\n"
                 "input -> unit(4) -> unit(8, k=5, act=tanh) -> unit(c=2, act=identity)")
    assert ops(report) == ["conv(4, 3x3, pad=same)", "relu", "conv(8, 5x5, pad=same)", "tanh",
                           "conv(2, 3x3, pad=same)"]
    assert [r.path[0].label for r in report.rows][:3] == ["unit(4)", "unit(4)", "unit(8, k=5, act=tanh)"]


@pytest.mark.parametrize("argument, label", [
    ("identity", "b(identity, 4)"), ("relu -> bn", "b(relu -> bn, 4)"), ("[relu]*2", "b([…]*2, 4)"),
    ("add(identity | conv(4, 1x1))", "b(add(identity | conv(4, 1x1)), 4)"), ("relu if false", "b(identity, 4)"),
    ("concat", None), ("inner(2)", "b(inner(2), 4)"),
])
def test_a_layer_passed_to_a_block_is_shown_as_the_language_writes_it(argument: str, label: str | None) -> None:
    """Issue 21: every kind of layer value has its own text in block-call labels, which the table, the
    `--json` paths (what `--freeze` matches) and the diagram's captions show; `identity` showed as
    Python's `IdentityLayer()`."""
    text = ("block b(x, c) = conv(c, 3x3, pad=same) -> x\nblock inner(c) = conv(c, 1x1) -> conv(4, 1x1)\n"
            f"input -> b({argument}, 4)")
    if label is None:  # a combinator not applied is not a layer: a located error, never a Python repr
        with pytest.raises(CnnError) as caught:
            net(text)
        assert "object at 0x" not in caught.value.render() and "Layer(" not in caught.value.render()
        return
    report = net(text)
    assert report.rows[0].path[0].label == label
    assert all("Layer(" not in f.label and "object at" not in f.label for r in report.rows for f in r.path)


@pytest.mark.parametrize("expression, value", [
    ("max(8, 3)", 8), ("min(3, 9, 5)", 3), ("round(2.5)", 2), ("round(3.5)", 4), ("round(2.6)", 3),
    ("floor(7.9)", 7), ("ceil(7.1)", 8), ("int(7.9)", 7), ("int(-7.9) + 16", 9), ("floor(-0.5) + 10", 9),
    ("max(8, int(32 * 0.75 + 4) // 8 * 8)", 24),  # torchvision's _make_divisible, inline
])
def test_numeric_functions_in_expressions(expression: str, value: int) -> None:
    """Issue 21: `min`, `max`, `round` (half to even, as Python and numpy), `floor`, `ceil`, `int` (toward 0)."""
    assert ops(net(f"let c = {expression}\ninput -> conv(c, 1x1)")) == [f"conv({value}, 1x1)"]


@pytest.mark.parametrize("expression, says", [
    ("max(8)", "`max` takes at least 2 numbers, got 1"), ("round(1, 2)", "`round` takes 1 number, got 2"),
    ("max(8, relu)", "`max` needs numbers, got a builtin layer"), ("floor(x=2)", "`floor` takes no named"),
    ("int(1e300)", "does not fit in 64 bits"), ("mx(3, 4)", "did you mean `max`?"),
])
def test_numeric_functions_misused_are_located_errors(expression: str, says: str) -> None:
    with pytest.raises(CnnError) as caught:
        net(f"let c = {expression}\ninput -> conv(c, 1x1)")
    rendered = caught.value.render()
    assert says in rendered and ":3:" in rendered, rendered


def test_a_binding_named_like_a_function_shadows_it() -> None:
    assert ops(net("let max = 6\ninput -> conv(max, 1x1)")) == ["conv(6, 1x1)"]


def test_blocks_can_be_used_before_they_are_defined() -> None:
    report = net("input -> outer(4)\nblock outer(c) = inner(c) -> inner(c)\nblock inner(c) = conv(c, 1x1)")
    assert [f.label for f in report.rows[1].path] == ["outer(4)", "inner(4)"]


def test_padding_forms() -> None:
    shapes = [net(f"input -> conv(1, 3x3, pad={p})", input="10x10x1").output_shape[:2] for p in
              ("same", "valid", "1", "(1, 0)", "((0, 1), (2, 3))")]
    assert shapes == [(10, 10), (8, 8), (10, 10), (10, 8), (9, 13)]


def test_same_padding_with_stride_two() -> None:
    assert net("input -> conv(1, 3x3, stride=2, pad=same)", input="7x8x1").output_shape == (4, 4, 1)


def test_dilation_and_groups() -> None:
    report = net("input -> conv(8, 3x3, dilation=2) -> conv(16, 3x3, groups=4, pad=same, bias=false)",
                 input="9x9x4")
    first, second = report.rows
    assert first.output_shape == (5, 5, 8) and first.params == 3 * 3 * 4 * 8 + 8
    assert second.params == 3 * 3 * (8 // 4) * 16


def test_depthwise_convolution() -> None:
    report = net("input -> conv(32, 3x3, groups=32, pad=same)", input="8x8x32")
    assert report.params == 9 * 32 + 32 and report.macs == 9 * 32 * 64


def test_ceil_mode_pooling() -> None:
    floor = net("input -> maxpool(3x3, stride=2)", input="112x112x1").output_shape
    ceil = net("input -> maxpool(3x3, stride=2, ceil=true)", input="112x112x1").output_shape
    assert floor[:2] == (55, 55) and ceil[:2] == (56, 56)


def test_global_pooling_flatten_and_implicit_flatten_note() -> None:
    report = net("input -> conv(8, 3x3) -> global_avgpool -> fc(4)")
    assert report.rows[1].output_shape == (8,)
    flat = net("input -> conv(8, 3x3) -> fc(4)")
    assert flat.rows[1].note == "flattens 30x30x8 to 7200 first"
    explicit = net("input -> conv(8, 3x3) -> flatten -> fc(4)")
    assert explicit.rows[1].output_shape == (7200,) and explicit.rows[2].note == ""


def test_every_activation_and_normalization_keeps_the_shape() -> None:
    layers = "relu -> relu6 -> gelu -> silu -> tanh -> sigmoid -> softmax -> leaky_relu(0.2) -> bn -> lrn -> dropout(0.1)"
    report = net(f"input -> {layers}", input="4x4x3")
    assert all(r.output_shape == (4, 4, 3) for r in report.rows)
    assert ops(report)[7] == "leaky_relu(slope=0.2)"
    assert report.params == 6 and report.state == 6  # bn only


def test_batch_norm_parameters() -> None:
    assert ops(net("input -> bn(eps=1e-3, momentum=0.99)"))[0] == "bn(eps=0.001, momentum=0.99)"


def test_concat_joins_channels_in_branch_order() -> None:
    report = net("input -> concat(conv(4, 1x1) | conv(8, 3x3, pad=same) | maxpool(3x3, stride=1, pad=1))")
    assert report.output_shape == (32, 32, 15)
    assert [r.path[-1].label for r in report.rows[:3]] == ["branch 1/3", "branch 2/3", "branch 3/3"]


def test_add_and_residual() -> None:
    assert net("input -> add(conv(3, 1x1) | relu)").output_shape == (32, 32, 3)
    report = net("input -> residual(conv(3, 3x3, pad=same) -> bn) -> relu")
    add = report.rows[2]
    assert add.op == "add" and report.graph.nodes[3].inputs == (2, 0)  # body, then the identity shortcut
    projected = net("input -> residual(conv(8, 3x3, stride=2, pad=1), shortcut=conv(8, 1x1, stride=2))")
    assert projected.output_shape == (16, 16, 8)


def test_node_names_are_unique_and_readable() -> None:
    report = net("input -> conv(4, 1x1) -> relu -> conv(4, 1x1) -> relu -> fc(2)")
    assert [r.name for r in report.rows] == ["conv1", "relu1", "conv2", "relu2", "fc1"]


def test_set_overrides_a_let() -> None:
    body = "let W = 4\ninput -> conv(W, 1x1)"
    assert net(body).output_shape[-1] == 4
    assert net(body, W=6).output_shape[-1] == 6
    assert net(body, W="2 * 5").output_shape[-1] == 10


def test_set_of_an_unused_name_is_an_error() -> None:
    with pytest.raises(CnnError) as caught:
        net("let Width = 4\ninput -> conv(Width, 1x1)", width=3)
    assert "did you mean `Width`?" in caught.value.render()


def test_let_order_does_not_matter() -> None:
    assert net("let A = B * 2\nlet B = 3\ninput -> conv(A, 1x1)").output_shape[-1] == 6


@pytest.mark.parametrize("body, kind", [
    ("input -> conv(4, 3x3) -> conv(4, 3x3) -> fc(2)\ninput -> relu", "duplicate"),
    ("input -> [relu]*(0 - 1)", "value"),
    ("let t = (1, 2)\ninput -> conv(t, 3x3)", "type"),
    ("input -> conv(4, 3x3) -> relu(3)", "arguments"),
    ("input -> fc(4) -> maxpool(2x2)", "shape"),
    ("input -> conv(1 / 0, 1x1)", "value"),
    ("input -> conv(4, 1x1, bias=1)", "type"),
    ("input -> concat", "type"),
    ("input -> dropout(1.5)", "type"),
    ("let x = conv(4, 1x1)\ninput -> x(3)", "type"),
    ("let x = relu\ninput -> x(3)", "arguments"),
    ("input -> relu if 3", "type"),
    ("input -> conv(4, 1x1) -> [relu]*2.0", "type"),
    ("input -> 3", "type"),
])
def test_errors_have_the_right_kind(body: str, kind: str) -> None:
    assert kind in kinds_of(body)


def test_errors_in_unused_bindings_are_reported() -> None:
    assert kinds_of("let unused = conv(4, sam)\ninput -> relu") == ("name",)


def test_all_errors_of_a_stage_are_reported_together() -> None:
    kinds = kinds_of("input -> conv(4, 3x3, strid=1) -> maxpol(2) -> fc(bias=true)")
    assert kinds == ("arguments", "name", "arguments")
    shapes = kinds_of("input -> concat(conv(4, 3x3, groups=2) | fc(2) -> conv(1, 1x1)) -> fc(3)")
    assert shapes == ("shape", "shape")  # both branches; the concat after them is not blamed


def test_a_block_knows_the_shape_of_its_input() -> None:
    """in_channels / in_height / in_width (issue 13, part 1): per call, from the shape the call receives."""
    report = cnndsl.check("""network T
input 20x12x6
block half() = conv(in_channels // 2, 1x1)
block depthwise() = conv(in_channels, 3x3, pad=same, groups=in_channels)
block tall() = conv(in_height, 1x1) -> maxpool(2x2) -> conv(in_width, 1x1)
block head(in_channels=7) = fc(in_channels)
input -> half -> depthwise -> half -> tall -> global_avgpool -> head
""")
    convs = [(n.op.filters, n.op.groups) for n in report.graph.nodes if n.op.kind == "conv"]
    assert convs == [(3, 1), (3, 3), (1, 1), (20, 1), (12, 1)]  # tall: the block's input, not the conv's
    fcs = [n.op.units for n in report.graph.nodes if n.op.kind == "fc"]
    assert fcs == [7]  # a parameter of the same name wins
    halves = [n for n in report.graph.nodes if n.op.kind == "conv" and "half" in n.where()]
    assert len(halves) == 2
    vector = cnndsl.check("network V\ninput 4x4x8\nblock w() = fc(in_channels * 2)\ninput -> global_avgpool -> w\n")
    assert vector.output_shape == (16,)
    for text, message in (("input -> conv(in_channels, 1x1)", "known only inside a block's body"),
                          ("block b() = fc(in_height)\ninput -> global_avgpool -> b",
                           "known only inside the body of a block applied to a feature map")):
        with pytest.raises(CnnError, match=message):
            cnndsl.check(f"network E\ninput 4x4x8\n{text}\n")


@pytest.mark.parametrize("definitions, use", [
    ("block b(c) = conv(c, 3x3)\nblock b(c, k) = conv(c, k)", "b(4, 3x3)"),
    ("let n = 3\nlet n = (1, 2)", "conv(n[1], 1x1)"),
    ("let act = relu\nblock act(c) = conv(c, 1x1)", "act(4)"),
])
def test_a_name_defined_twice_is_one_error_not_a_cascade(definitions: str, use: str) -> None:
    """Issue 21: the uses of a name defined twice were checked against its first definition, and a use
    written for the second got a second, misleading error; now the duplicate is the only one."""
    with pytest.raises(CnnError) as caught:
        net(f"{definitions}\ninput -> {use}")
    assert caught.value.kinds == ("duplicate",), caught.value.render()


def test_an_optional_block_parameter_is_a_layer_absent_unless_given() -> None:
    """Issue 21: `block ir(c, se?)`: `se?` (or `se`) in the body applies the layer given, by position or by
    name, and nothing when the call leaves it out; the label shows only what was given."""
    text = ("block ir(c, se?, act=relu) = conv(c, 1x1) -> act -> se?\n"
            "input -> ir(8) -> ir(8, bn) -> ir(8, act=tanh, se=dropout(0.5))")
    assert ops(net(text)) == ["conv(8, 1x1)", "relu", "conv(8, 1x1)", "relu", "bn", "conv(8, 1x1)", "tanh",
                              "dropout(0.5)"]
    labels = [r.path[0].label for r in net(text).rows]
    assert labels[0] == "ir(8)" and "ir(8, bn)" in labels and "ir(8, se=dropout(0.5), act=tanh)" in labels
    with pytest.raises(CnnError) as caught:
        net("block ir(c, se?=relu) = conv(c, 1x1) -> se?\ninput -> ir(8)")
    assert "the optional parameter `se?` has a default" in caught.value.render()
