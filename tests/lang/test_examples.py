"""Every example checks; the seed architectures report the published counts to the unit."""

from __future__ import annotations

from pathlib import Path

import pytest

import cnndsl
from tests.conftest import EXAMPLES, FAMILIES

# DESIGN.md §5: parameters and multiply-accumulates.
REFERENCE = {
    "lenet5": (61_706, 416_520),
    "alexnet": (61_100_840, 714_188_480),
    "zfnet": (62_357_608, 1_168_032_896),
    "vgg16": (138_357_544, 15_470_264_320),
    "googlenet": (6_624_904, 1_498_376_192),
    # torchvision's googlenet(aux_logits=True): every parameter, the inference MACs (its auxiliary heads
    # are training-only, so left out of the MACs as torchvision's eval-mode forward leaves them out)
    "googlenet_aux": (13_004_888, 1_498_376_192),
    # torchvision's segmentation.fcn_resnet50(aux_loss=True, num_classes=21) at 520x520: its `aux` head is a
    # regular output (torchvision computes it in evaluation too), so its MACs count (FlopCounterMode / 2)
    "fcn_resnet50": (35_322_218, 152_716_512_000),
    "resnet18": (11_689_512, 1_814_073_344),
    "resnet50": (25_557_032, 4_089_184_256),
    "resnet101": (44_549_160, 7_801_405_440),  # torchvision's (FlopCounterMode / 2): ResNet-50's blocks, imported
    "resnet152": (60_192_808, 11_513_626_624),
    "densenet121": (7_978_856, 2_834_161_664),  # issue 13's table (torchvision's model, FlopCounterMode / 2)
    "mobilenet_v2": (3_504_872, 300_774_272),  # issue 13's table
    "efficientnet_b0": (5_288_548, 385_814_752),  # issue 13's table
    "convnext_tiny": (28_589_128, 4_455_531_264),  # issue 13's table
}
CONCRETE = [p for p in EXAMPLES if p.name not in FAMILIES]


def test_every_seed_architecture_has_an_example() -> None:
    names = {p.stem for p in EXAMPLES}
    assert set(REFERENCE) | {"small"} <= names


@pytest.mark.parametrize("path", CONCRETE, ids=lambda p: p.stem)
def test_example_checks(path: Path) -> None:
    report = cnndsl.check(path)
    assert report.rows, "an example has layers"
    assert report.params > 0 and report.macs > 0
    assert report.flops == 2 * report.macs
    assert report.params == sum(r.params for r in report.rows)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_counts(name: str) -> None:
    report = cnndsl.check(f"examples/{name}.cnn")
    assert (report.params, report.macs) == REFERENCE[name]


@pytest.mark.parametrize("path", CONCRETE, ids=lambda p: p.stem)
def test_examples_are_short(path: Path) -> None:
    """Blocks and repetition, not copy-paste: no example needs more than 40 lines."""
    assert len(path.read_text().splitlines()) <= 40


def test_shapes_of_the_famous_networks() -> None:
    zf = cnndsl.check("examples/zfnet.cnn")
    maps = [r.output_shape[0] for r in zf.rows if r.op.startswith(("conv", "maxpool"))]
    assert maps == [110, 55, 26, 13, 13, 13, 13, 6]
    resnet = cnndsl.check("examples/resnet50.cnn")
    assert resnet.state == 2 * sum(r.output_shape[-1] for r in resnet.rows if r.op == "bn")
    assert resnet.output_shape == (1000,)


def test_course_pattern_is_a_family_until_bound() -> None:
    with pytest.raises(cnndsl.CnnError) as caught:
        cnndsl.check("examples/course.cnn")
    free = [d.message for d in caught.value.diagnostics if d.kind == "unbound"]
    assert "the spec is a family with 7 free names: `CONV`, `N`, `POOL?`, `POOL`, `M`, `FC`, `K`" in free
    bound = cnndsl.check("examples/course.cnn", set={
        "N": 2, "M": 3, "K": 1, "POOL?": True, "CONV": "conv(32, 3x3, pad=same)",
        "POOL": "maxpool(2x2)", "FC": "fc(10)"})
    assert bound.output_shape == (10,)
    assert [r.op for r in bound.rows].count("conv(32, 3x3, pad=same)") == 6
    without_pool = cnndsl.check("examples/course.cnn", set={
        "N": 1, "M": 2, "K": 0, "POOL?": False, "CONV": "conv(8, 3x3)", "POOL": "maxpool(2x2)", "FC": "fc(10)"})
    assert not any(r.op.startswith("maxpool") for r in without_pool.rows)
    assert [r.output_shape for r in without_pool.rows][:4] == [(6, 6, 8), (6, 6, 8), (4, 4, 8), (4, 4, 8)]
