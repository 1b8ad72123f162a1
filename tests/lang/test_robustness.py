"""Whatever the input, the front end answers with a result or a `CnnError`, never a crash or a hang."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl.lang.errors import CnnError
from tests.conftest import ROOT

TOKENS = ["input", "->", "[", "]", "(", ")", "*", "?", "|", ",", "=", "conv", "relu", "fc", "maxpool", "concat",
          "residual", "let", "block", "N", "i", "as", "if", "else", "3", "2x2", "0", "-", "**", "\n", "same", "bn",
          "network", "x", "1.5", "#", "true", "global_avgpool", "add", "shortcut", "//"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_never_crashes(tokens: list[str]) -> None:
    text = "network T\ninput 16x16x3\n" + " ".join(tokens)
    try:
        cnndsl.check(text)
    except CnnError as err:
        assert err.render()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        cnndsl.check(text)
    except CnnError as err:
        assert err.render()


layer = st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 16), st.integers(1, 5), st.integers(1, 3), st.booleans()),
    st.tuples(st.just("maxpool"), st.integers(1, 3)),
    st.tuples(st.just("relu")),
    st.tuples(st.just("bn")),
)


@settings(max_examples=150, deadline=None)
@given(st.integers(8, 40), st.integers(1, 4), st.lists(layer, min_size=1, max_size=8), st.integers(1, 20))
def test_random_networks_count_like_the_textbook(size: int, channels: int, layers: list, classes: int) -> None:
    """Generate a chain, track shapes and parameters by hand, compare with `check`."""
    h = w = size
    c, params, macs, parts, valid = channels, 0, 0, [], True
    for spec in layers:
        if spec[0] == "conv":
            _, filters, k, stride, bias = spec
            parts.append(f"conv({filters}, {k}x{k}, stride={stride}, pad=same, bias={'true' if bias else 'false'})")
            h, w = -(-h // stride), -(-w // stride)
            params += k * k * c * filters + (filters if bias else 0)
            macs += k * k * c * filters * h * w
            c = filters
        elif spec[0] == "maxpool":
            k = spec[1]
            parts.append(f"maxpool({k}x{k})")
            h, w = h // k, w // k
            valid = valid and h >= 1 and w >= 1
        elif spec[0] == "bn":
            parts.append("bn")
            params += 2 * c
        else:
            parts.append("relu")
    parts.append(f"fc({classes})")
    params += h * w * c * classes + classes
    macs += h * w * c * classes
    text = f"network R\ninput {size}x{size}x{channels}\ninput -> " + " -> ".join(parts)
    if not valid:
        try:
            cnndsl.check(text)
        except CnnError as err:
            assert "shape" in err.kinds
        else:
            raise AssertionError("a pool that shrinks below 1x1 must be an error")
        return
    report = cnndsl.check(text)
    assert (report.params, report.macs, report.output_shape) == (params, macs, (classes,))


def test_long_expressions_evaluate() -> None:
    report = cnndsl.check("network T\ninput 8x8x1\nlet a = " + " + ".join(["1"] * 2000) + "\ninput -> conv(a, 1x1)")
    assert report.output_shape == (8, 8, 2000)


def test_too_deep_expressions_are_an_error_at_their_binding() -> None:
    for expr in (" + ".join(["1"] * 50_000), "-" * 50_000 + "1"):
        with pytest.raises(CnnError) as caught:
            cnndsl.check(f"network T\ninput 8x8x1\nlet a = {expr}\ninput -> relu")
        (diagnostic,) = caught.value.diagnostics
        assert diagnostic.kind == "limit" and diagnostic.span.line == 3
        assert diagnostic.message == "`a` is nested too deeply to evaluate"


def test_check_does_not_import_jax() -> None:
    """The front end stays fast and honest: parse, expand and check import no JAX."""
    code = ("import sys, cnndsl; cnndsl.check('examples/resnet50.cnn'); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax', 'numpy')); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
