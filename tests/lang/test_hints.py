"""A hint names the real fix: for each kind of hint, the suggested change, applied as a user would apply
it, makes the spec check (or the run start).

The residual cases are drawn from every combination of a few kernels, strides, paddings, widths and input
sizes, so the hint is tested as a mechanism, not on one example.
"""

from __future__ import annotations

import itertools
import re

import pytest

import cnndsl
from cnndsl.lang.errors import CnnError

LAYERS = [
    "conv({w}, 3x3)", "conv({w}, 3x3, pad=same)", "conv({w}, 5x5, stride=2)", "conv({w}, 3x3, stride=2, pad=same)",
    "conv({w}, 1x1)", "conv({w}, 3x3, pad=1)", "maxpool(2x2)", "maxpool(3x3, stride=2)", "avgpool(3x3, stride=1)",
    "conv({w}, 3x3, stride=(1, 2), pad=same)",
]


def residual_spec(size: int, channels: int, body: str, shortcut: str | None = None) -> str:
    joined = f"residual({body}" + (f", shortcut={shortcut}" if shortcut else "") + ")"
    return f"network R\ninput {size}x{size}x{channels}\ninput -> {joined} -> relu -> global_avgpool -> fc(10)\n"


def apply_residual_hint(help_text: str, body: str) -> tuple[str, str | None]:
    """What a user does with the hint: `pad=same` on every convolution and pool of the body (replacing the
    padding it had), and the shortcut it names."""
    if "`pad=same`" in help_text:
        layers = []
        for layer in body.split(" -> "):
            if "(" not in layer:  # an activation
                layers.append(layer)
                continue
            name, args = layer[:-1].split("(", 1)
            args = re.sub(r",\s*pad=[^,()]+", "", args)
            layers.append(f"{name}({args}, pad=same)")
        body = " -> ".join(layers)
    shortcut = re.search(r"shortcut=(.*)\)`", help_text)
    return body, shortcut.group(1) if shortcut else None


def residual_bodies() -> list[tuple[int, int, str]]:
    cases = []
    for size, channels in ((8, 8), (7, 4), (13, 16)):
        for first, second in itertools.product(LAYERS, repeat=2):
            body = f"{first} -> relu -> {second}".format(w=2 * channels if "stride=2" in first else channels)
            cases.append((size, channels, body))
    return cases


def test_every_residual_hint_applied_makes_the_spec_check() -> None:
    seen: dict[str, int] = {"pad": 0, "projection": 0, "both": 0}
    for size, channels, body in residual_bodies():
        try:
            cnndsl.check(residual_spec(size, channels, body))
            continue
        except CnnError as err:
            (diagnostic,) = err.diagnostics
        if not diagnostic.message.startswith("`residual` adds its body's"):
            continue  # a body that shrinks its input away: another error, with its own hint
        assert diagnostic.help, f"no hint for {body} on {size}x{size}x{channels}"
        fixed_body, shortcut = apply_residual_hint(diagnostic.help, body)
        kind = "both" if fixed_body != body and shortcut else "pad" if fixed_body != body else "projection"
        seen[kind] += 1
        report = cnndsl.check(residual_spec(size, channels, fixed_body, shortcut))  # raises if the hint was wrong
        assert report.output_shape == (10,)
    assert min(seen.values()) >= 10, seen  # every kind of fix was exercised


@pytest.mark.parametrize("size", [8, 9, 31])
def test_a_hint_never_suggests_a_projection_for_an_unpadded_body(size: int) -> None:
    """A 1x1 projection cannot turn 8x8 into 6x6 (it would need a stride that does not exist, or one that
    only happens to fit): an unpadded 3x3 body is told to pad."""
    with pytest.raises(CnnError) as caught:
        cnndsl.check(residual_spec(size, 8, "conv(8, 3x3) -> relu -> conv(8, 3x3)"))
    help_text = caught.value.diagnostics[0].help
    assert "`pad=same`" in help_text and "shortcut=" not in help_text, help_text


def _classifier(shape: str, head: str = "fc(10)", lets: str = "") -> str:
    return f"network H\ninput {shape}\n{lets}input -> conv(4, 3x3, pad=same) -> relu -> global_avgpool -> {head}\n"


def test_a_spec_for_another_builtin_dataset_is_told_to_pass_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 28x28x1 network meets the default 8x8 digits (a sweep's best.cnn trained without its --data): the
    hint names the dataset of the network's shape first, and that dataset fits."""
    import numpy as np

    from cnndsl.data import BUILTIN_SHAPES, load_dataset
    from cnndsl.training import TrainingError, check_compatible
    from tests.data.test_data import _register, fake_mnist, serve

    digits = load_dataset("digits")
    assert BUILTIN_SHAPES["digits"] == (digits.image_shape, digits.num_classes)  # the table tells the truth
    net = cnndsl.compile(_classifier("28x28x1"))
    with pytest.raises(TrainingError) as caught:
        check_compatible(net, digits, resize=False)
    named = re.search(r"pass --data (\S+);", str(caught.value))
    assert named, str(caught.value)
    monkeypatch.setenv("CNNDSL_CACHE", str(tmp_path))
    files = fake_mnist(np.random.default_rng(0))
    _register(monkeypatch, named.group(1), files)
    with serve(files) as url:
        monkeypatch.setenv("CNNDSL_DATA_MIRROR", url)
        check_compatible(net, load_dataset(named.group(1)), resize=False)  # the named dataset fits


@pytest.mark.parametrize("shape", ["20x20x1", "28x28x1", "32x32x3"])
def test_the_resize_hint_applied_lets_the_data_in(shape: str) -> None:
    from cnndsl.data import load_dataset
    from cnndsl.training import TrainingError, check_compatible

    digits, net = load_dataset("digits"), cnndsl.compile(_classifier(shape))
    with pytest.raises(TrainingError) as caught:
        check_compatible(net, digits, resize=False)
    message = str(caught.value)
    if shape.endswith("x1"):
        assert "pass --resize" in message
        check_compatible(net, digits, resize=True)
    else:  # 3 channels: --resize cannot make 1 channel 3; the input's channels must change
        fixed = re.search(r"change `input` to (\S+) \(or to (\S+) and pass --resize\)", message)
        assert fixed, message
        check_compatible(cnndsl.compile(_classifier(fixed.group(1))), digits, resize=False)
        check_compatible(cnndsl.compile(_classifier(fixed.group(2))), digits, resize=True)


@pytest.mark.parametrize("lets, head, expected", [
    ("let classes = 5\n", "fc(classes)", "--set classes=10"),
    ("let K = 3\nlet width = 64\n", "fc(width) -> relu -> fc(K)", "--set K=10"),
    ("let k = 3\n", "fc(k + 2)", None),  # --set k=10 would give 12 classes: k is not the count, no --set hint
    ("", "fc(7)", None),
])
def test_the_classes_hint_names_the_binding_that_sets_them(lets: str, head: str, expected: str | None) -> None:
    from cnndsl.data import load_dataset
    from cnndsl.training import TrainingError, check_compatible

    digits, spec = load_dataset("digits"), _classifier("8x8x1", head, lets)
    with pytest.raises(TrainingError) as caught:
        check_compatible(cnndsl.compile(spec), digits, resize=False, bindings={})
    message = str(caught.value)
    if expected is None:
        assert "end the network with fc(10)" in message and "--set" not in message, message
        return
    assert message.endswith(f"pass {expected}"), message
    name, value = expected.split()[1].split("=")
    check_compatible(cnndsl.compile(spec, set={name: int(value)}), digits, resize=False)  # the hint, applied


def test_a_body_that_sets_its_own_size_gets_a_hint_at_once_whatever_the_sizes() -> None:
    """Adaptive pooling sizes the body directly (no stride to read from the graph): the stride comes from the
    sizes in constant time, so a 100,000-pixel input answers at once, and the hint applied checks."""
    from tests.lang.test_limits import no_hang

    for size, pooled in ((8, 4), (9, 3), (100_000, 7)):
        body = f"adaptive_avgpool({pooled}x{pooled})"
        with no_hang(), pytest.raises(CnnError) as caught:
            cnndsl.check(residual_spec(size, 8, body))
        _, shortcut = apply_residual_hint(caught.value.diagnostics[0].help, body)
        assert shortcut is not None, caught.value.diagnostics[0].help
        assert cnndsl.check(residual_spec(size, 8, body, shortcut)).output_shape == (10,)
