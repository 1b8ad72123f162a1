"""The output-size rule of convolution and pooling, checked against brute-force window counting and against
PyTorch's own formula; the size errors and their wording."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnndsl
from cnndsl.lang.errors import CnnError
from cnndsl.lang.shapes import window_output

sizes, kernels, strides, dilations, pads = (st.integers(1, 64), st.integers(1, 7), st.integers(1, 4),
                                            st.integers(1, 3), st.integers(0, 3))


def windows_that_fit(size: int, reach: int, stride: int, before: int, after: int) -> int:
    """Count window positions one by one: start at -before, step by stride, stay inside the padding."""
    count, start = 0, -before
    while start + reach <= size + after:
        count, start = count + 1, start + stride
    return count


@given(sizes, kernels, strides, dilations, pads, pads)
def test_explicit_padding_counts_every_window_that_fits(size, kernel, stride, dilation, before, after) -> None:
    reach = (kernel - 1) * dilation + 1
    out, used = window_output(size, kernel, stride, dilation, ((before, after), (0, 0)), 0)
    assert used == (before, after)
    assert out == windows_that_fit(size, reach, stride, before, after)


@given(sizes, kernels, strides, dilations)
def test_valid_is_zero_padding(size, kernel, stride, dilation) -> None:
    assert window_output(size, kernel, stride, dilation, "valid", 0) == \
        window_output(size, kernel, stride, dilation, ((0, 0), (0, 0)), 0)


@given(sizes, kernels, strides, dilations)
def test_same_padding_is_minimal_and_puts_the_extra_after(size, kernel, stride, dilation) -> None:
    out, (before, after) = window_output(size, kernel, stride, dilation, "same", 0)
    reach = (kernel - 1) * dilation + 1
    assert out == math.ceil(size / stride)
    assert after - before in (0, 1)
    assert windows_that_fit(size, reach, stride, before, after) == out
    if before + after > 0:  # one less padding would lose the last window
        assert windows_that_fit(size, reach, stride, before, after - 1 if after > before else after) < out or \
            windows_that_fit(size, reach, stride, max(before - 1, 0), after) < out


def torch_pool_output(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """PyTorch's `pooling_output_shape` (aten/src/ATen/native/Pool.h), transcribed: integer division rounding
    towards -inf (`div_rtn`), the ceil-mode correction, and 0 where `pool2d_shape_check` refuses the size."""
    numerator = size + 2 * pad - (kernel - 1) - 1 + (stride - 1 if ceil else 0)
    out = numerator // stride + 1  # Python's // is div_rtn
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return max(out, 0)


@given(st.integers(1, 12), kernels, strides, pads, st.booleans())
def test_pooling_sizes_match_pytorch_for_every_input_size(size, kernel, stride, pad, ceil) -> None:
    """Small inputs included: a ceil-mode window may overhang the input by less than a stride."""
    pad = min(pad, kernel // 2)  # torch requires pad <= kernel / 2 (cnndsl refuses more, see below)
    out, _ = window_output(size, kernel, stride, 1, ((pad, pad), (pad, pad)), 0, ceil=ceil)
    assert out == torch_pool_output(size, kernel, stride, pad, ceil)
    floor, _ = window_output(size, kernel, stride, 1, ((pad, pad), (pad, pad)), 0)
    assert out - floor in (0, 1)


def test_ceil_pooling_of_an_input_smaller_than_its_window() -> None:
    report = cnndsl.check("network T\ninput 2x2x1\ninput -> maxpool(3x3, stride=2, ceil=true)")
    assert report.output_shape == (1, 1, 1)
    with pytest.raises(CnnError, match="below 1x1"):  # overhanging by a whole stride: no window starts inside
        cnndsl.check("network T\ninput 1x1x1\ninput -> maxpool(3x3, stride=2, ceil=true)")


@pytest.mark.parametrize("pool, message", [
    ("maxpool(2x2, stride=1, pad=2)", "pads 2 on the top/bottom, more than half its window of 2"),
    ("avgpool(3x3, pad=(0, 2))", "pads 2 on the left/right, more than half its window of 3"),
    ("maxpool(1x4, pad=((1, 0), (0, 3)))", "pads 1 on the top/bottom, more than half its window of 1"),
])
def test_pool_padding_beyond_half_the_window_is_refused(pool: str, message: str) -> None:
    with pytest.raises(CnnError) as caught:
        cnndsl.check(f"network T\ninput 8x8x1\ninput -> {pool}")
    (d,) = caught.value.diagnostics
    assert d.kind == "shape" and message in d.message and d.span.col == 10
    cnndsl.check("network T\ninput 8x8x1\ninput -> maxpool(2x2, stride=1, pad=1) -> avgpool(3x3, pad=same)")


def test_size_errors_say_the_padded_size_and_the_failing_axis() -> None:
    with pytest.raises(CnnError) as caught:
        cnndsl.check("network T\ninput 6x7x1\ninput -> conv(8, 9x9, pad=1)")
    (d,) = caught.value.diagnostics
    assert d.message == "`conv(8, 9x9, pad=1)` needs an input of at least 9x9 after padding, got 6x7x1, which is 8x9 padded"
    assert d.notes == ("the height 6 + 2 padding = 8 is smaller than the 9x9 window",)
    cnndsl.check("network T\ninput 7x7x1\ninput -> conv(8, 9x9, pad=1)")  # the same conv fits a 7x7 input
    with pytest.raises(CnnError) as caught:
        cnndsl.check("network T\ninput 1x5x1\ninput -> avgpool(3x3, pad=(0, 1))")
    assert caught.value.diagnostics[0].notes[0] == "its input is 1x5x1: the height 1 is smaller than the 3x3 window"


def test_known_sizes() -> None:
    assert window_output(224, 7, 2, 1, ((3, 3), (3, 3)), 0)[0] == 112  # ResNet stem
    assert window_output(112, 3, 2, 1, ((1, 1), (1, 1)), 0)[0] == 56   # ResNet max pool
    assert window_output(110, 3, 2, 1, "valid", 0, ceil=True)[0] == 55  # ZF Net
    assert window_output(224, 3, 2, 1, "same", 0) == (112, (0, 1))     # extra pad after, as XLA
    assert window_output(4, 5, 1, 1, "valid", 0)[0] == 0               # does not fit
