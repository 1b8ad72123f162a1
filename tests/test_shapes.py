"""The output-size rule of convolution and pooling, checked against brute-force window counting."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from cnndsl.shapes import window_output

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


@given(sizes, kernels, strides, pads)
def test_ceil_mode_matches_pytorch_documented_formula(size, kernel, stride, pad) -> None:
    pad = min(pad, kernel // 2)  # torch requires pad <= kernel / 2
    if size + 2 * pad < kernel:
        return
    torch_out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if (torch_out - 1) * stride >= size + pad:
        torch_out -= 1
    out, _ = window_output(size, kernel, stride, 1, ((pad, pad), (pad, pad)), 0, ceil=True)
    assert out == torch_out
    floor, _ = window_output(size, kernel, stride, 1, ((pad, pad), (pad, pad)), 0)
    assert out - floor in (0, 1)


def test_known_sizes() -> None:
    assert window_output(224, 7, 2, 1, ((3, 3), (3, 3)), 0)[0] == 112  # ResNet stem
    assert window_output(112, 3, 2, 1, ((1, 1), (1, 1)), 0)[0] == 56   # ResNet max pool
    assert window_output(110, 3, 2, 1, "valid", 0, ceil=True)[0] == 55  # ZF Net
    assert window_output(224, 3, 2, 1, "same", 0) == (112, (0, 1))     # extra pad after, as XLA
    assert window_output(4, 5, 1, 1, "valid", 0)[0] == 0               # does not fit
