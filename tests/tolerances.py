"""The numeric tolerances of the tests, each with where its bound comes from.

float32 rounds every operation to within u = 2**-24 = 6.0e-8 of the exact result, relatively. A sum of n
terms is then within n*u*sum|terms| of the exact sum in the worst case and about sqrt(n)*u*sum|terms| when
the rounding errors have random signs (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
sections 2.8 and 4.2). Two implementations of one computation (XLA against a float64 numpy reference,
against ONNX Runtime, against the same function compiled another way) differ by at most the sum of their
own errors. The tests' inputs are standard normal (magnitude ~1), so "relative to the terms" and "relative
to the output" are of one size, except for outputs near zero: an `atol` of the same size covers those.

"Measured" figures are the largest error each comparison reached with the tests' own inputs (December 2026,
jax 0.10 on x86-64), recorded by wrapping the comparisons; every tolerance is at least 10x its measured
error and below what a wrong computation gives (a wrong padding, order, statistic or layout changes
outputs by 1e-2 or more of their scale).

A comparison not listed here either is exact (the same program on the same data: the tests assert
bit-equality) or states its own bound beside it (statistics of random draws, a stated target).
"""

U = 2.0**-24

#: One layer against a numpy float64 reference (convolutions, dense layers, projections). The tests' layers
#: sum at most 3*3*64 = 576 products per output: sqrt(576)*u = 1.4e-6 of the terms' scale for random-sign
#: errors, 576*u = 3.5e-5 in the worst case. Measured: at most 2.4e-7 absolute.
LAYER = {"rtol": 1e-5, "atol": 1e-5}

#: Pooling, local response normalization, layer scale and other elementwise layers: each output is one
#: value, a sum of at most 9 terms, or a few transcendental functions of them (XLA's are accurate to a few
#: ulps): 9*u = 5.4e-7. Measured: at most 1.2e-7 absolute.
ELEMENTWISE = {"rtol": 1e-5, "atol": 1e-6}

#: A whole network computed twice in float32 (JAX against ONNX Runtime; an export, ejected Python or a
#: scanned module against the in-memory one), as the largest difference relative to the largest output: each
#: layer adds its sums' error to what reaches it; 20 layers of sums of <= 4,608 terms (3*3*512) give
#: 20*sqrt(4608)*u = 8e-5. Measured: at most 8.5e-7 (15 random networks and the fast set's examples in ONNX
#: Runtime), 0 for exports and scanned modules (the same XLA program).
NETWORK = 1e-4

#: The same, as allclose arguments, for networks of at most ~20 layers whose outputs are of order 1:
#: measured at most 1.6e-7 absolute (export and run against the live module, ejected Python).
NETWORK_CLOSE = {"rtol": 1e-5, "atol": 1e-5}

#: Logits of a network with pretrained weights (the PyTorch fixtures, LeNet-5 and a narrow ResNet) against
#: the logits PyTorch computed, relative to the largest: <= 10 layers of sums of <= 1,152 terms in both
#: frameworks, 2 * 10*sqrt(1152)*u = 4e-5. Measured: 2.8e-7 (LeNet-5) and 5.9e-7 (narrow ResNet).
IMPORTED_LOGITS = 1e-5

#: Batch-norm statistics and normalized outputs over the tests' 72-value channels, in float32 against float64:
#: a mean or variance is a sum of 72 terms (sqrt(72)*u = 5e-7 relative) and eps = 1e-3 enters once.
#: Measured: at most 1.1e-6 absolute. A wrong statistic (the biased variance for the unbiased one: a factor
#: 72/71, 1.4%; a wrong momentum: 10x) is far outside it.
BATCH_STATS = {"rtol": 1e-4, "atol": 1e-4}
