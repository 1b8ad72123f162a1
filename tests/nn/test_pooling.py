"""Max pool's gradient (cnndsl.nn.flax_backend.max_pool): computed from the window's strided views instead
of XLA's select_and_scatter (5-20x slower on CPU), it is the same gradient: each window's output gradient
goes to its first maximal element in row-major order, on maps full of ties and with -inf padding too, and
it stays so when XLA fuses the layers before the pool into the forward and the backward separately."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnndsl.nn.flax_backend import max_pool

#: (input shape, window, stride, padding): non-overlapping, overlapping (ResNet's 3x3/2 pad 1), stride 1 with
#: asymmetric padding, ceil mode's extra row and column, a window that does not divide the map
POOLS = [((2, 8, 8, 3), 2, 2, ((0, 0), (0, 0))), ((2, 9, 9, 2), 3, 2, ((1, 1), (1, 1))),
         ((1, 7, 10, 3), 3, 1, ((1, 2), (0, 1))), ((2, 11, 11, 2), 3, 2, ((0, 1), (0, 1))),
         ((1, 6, 6, 4), 2, 1, ((0, 0), (0, 0))), ((1, 7, 5, 2), 3, 3, ((0, 2), (0, 1)))]


def native(x: jax.Array, dims: tuple[int, ...], strides: tuple[int, ...], pads: tuple[tuple[int, int], ...]
           ) -> jax.Array:
    """The max pool as JAX differentiates it by default (reduce_window; its gradient select_and_scatter)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, pads)


@pytest.mark.parametrize("shape,window,stride,padding", POOLS)
@pytest.mark.parametrize("data", ["normal", "ties"])
def test_the_max_pools_gradient_is_select_and_scatters(shape, window, stride, padding, data) -> None:
    """Each window's gradient goes where select_and_scatter sends it, also on maps full of ties (integers
    0..2) and with -inf padding; an element in several overlapping windows adds their terms in another order."""
    rng = np.random.default_rng(window * 10 + stride)
    x = jnp.asarray(rng.normal(size=shape) if data == "normal" else rng.integers(0, 3, size=shape), jnp.float32)
    dims, strides, pads = (1, window, window, 1), (1, stride, stride, 1), ((0, 0), *padding, (0, 0))
    expected, pullback = jax.vjp(lambda v: native(v, dims, strides, pads), x)
    grad = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    got, ours = jax.jit(lambda v: jax.vjp(lambda u: max_pool(u, dims, strides, pads), v))(x)
    assert np.array_equal(got, expected)
    if stride >= window:  # each element in one window at most: the same single term
        assert np.array_equal(ours(grad)[0], pullback(grad)[0])
    else:  # an element in several windows sums their terms (at most 9, each a standard normal draw, |g| < 5
        # here) in another order: 9 roundings of a sum below 9 * 5 (measured: 4.8e-7)
        np.testing.assert_allclose(ours(grad)[0], pullback(grad)[0], rtol=0, atol=9 * 2.0**-24 * 9 * 5)


@pytest.mark.parametrize("prefix", ["batch norm, relu", "scale, shift, tanh"])
def test_each_window_sends_its_gradient_to_one_element_when_the_layers_before_are_fused(prefix: str) -> None:
    """The pool after elementwise layers, all in one jitted train-step-like program: XLA may compute the
    pool's input once for the forward and again inside the backward's fusion, a few ulps apart. Each
    window's gradient must still reach exactly one of its elements, as select_and_scatter's does (the
    first version compared the recomputed input with the forward's output and lost or doubled such windows:
    a 4-device run then ended 1e-2 from a 1-device one)."""
    rng = np.random.default_rng(7)
    z = jnp.asarray(rng.normal(size=(8, 24, 24, 8)), jnp.float32)
    scale = jnp.asarray(rng.normal(size=(8,)) * 3, jnp.float32)
    dims, strides, pads = (1, 2, 2, 1), (1, 2, 2, 1), ((0, 0), (0, 0), (0, 0), (0, 0))

    def before(z: jax.Array, scale: jax.Array) -> jax.Array:
        if prefix == "batch norm, relu":
            mean, var = z.mean((0, 1, 2)), z.var((0, 1, 2))
            return jax.nn.relu((z - mean) * jax.lax.rsqrt(var + 1e-5) * scale + 0.1)
        return jnp.tanh(z * scale + 0.3)

    def loss(z: jax.Array, scale: jax.Array, pool) -> jax.Array:
        return jnp.sum(pool(before(z, scale), dims, strides, pads) ** 2)

    grads = jax.jit(jax.grad(lambda z, s: loss(z, s, max_pool), argnums=(0, 1)))(z, scale)
    expected = jax.jit(jax.grad(lambda z, s: loss(z, s, native), argnums=(0, 1)))(z, scale)
    # the same gradients through the layers before: the rounding of the pool's input (float32, a few ulps)
    # and of the batch-norm sums over 4,608 values (2^-24 * 4608 relative) bound the difference
    for ours, theirs in zip(grads, expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(jnp.abs(theirs).max()))
    # and through the pool alone: one element of each window takes the window's whole gradient
    x = before(z, scale)
    dx = jax.jit(jax.grad(lambda x: jnp.sum(max_pool(x * 1.0, dims, strides, pads))))(x)
    windows = np.asarray(dx).reshape(8, 12, 2, 12, 2, 8)
    assert np.array_equal(windows.sum((2, 4)), np.ones((8, 12, 12, 8), np.float32))
    assert np.array_equal((windows != 0).sum((2, 4)), np.ones((8, 12, 12, 8)))
