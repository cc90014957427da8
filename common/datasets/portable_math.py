"""Float arithmetic that gives the same bits on every IEEE-754 machine.

A generated dataset is reproducible only if every action reaching the simulator has the same bits
everywhere. numpy's float32 `x @ W`, `np.exp` and `np.tanh` do not: `@` goes to BLAS, whose kernel
(and so its summation order and use of FMA) is chosen per CPU (`OPENBLAS_CORETYPE`), and numpy
picks SIMD implementations of `exp` / `tanh` per CPU (AVX2, AVX-512, baseline), which round
differently. MuJoCo then turns a last-bit difference into a different episode.

Everything here is built from IEEE-754 basic operations only (+, -, *, /, sqrt, comparisons, and
the exact `rint`, `ldexp`, `frexp`), one numpy ufunc per operation, in a fixed order, in float64.
IEEE-754 requires each basic operation to be correctly rounded, and one ufunc computes one
operation per element (no fused multiply-add can form across two ufunc calls), so the result is
the same on every x86-64 and ARM CPU whatever its SIMD width, and independent of BLAS and libm.
The functions are accurate to a few float64 ulps; callers round their final result to float32.
"""

from __future__ import annotations

import numpy as np

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2**20
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_SQRT_HALF = 0.7071067811865476
# 1 / n! for n = 2..17: the Taylor series of exp(r) - 1 - r on |r| <= ln(2) / 2 to < 1e-17.
_EXPM1_COEFFS = tuple(1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64)))
                      for n in range(2, 18))  # fmt: skip


def dense(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x @ kernel + bias in float64, summed over the inputs by a fixed tree.

    The products are one elementwise multiply. The inputs are padded with zeros to a power of two
    n, then the first half is added to the second until one row is left (input i meets input
    i + n/2 first), so the order never depends on the machine."""
    x = np.asarray(x, np.float64)
    products = x[:, :, None] * np.asarray(kernel, np.float64)[None, :, :]
    n = products.shape[1]
    width = 1 << max(0, (n - 1).bit_length())
    if width != n:
        padding = np.zeros((products.shape[0], width - n, products.shape[2]))
        products = np.concatenate([products, padding], axis=1)
    while width > 1:
        width //= 2
        products = products[:, :width] + products[:, width:]
    return products[:, 0] + np.asarray(bias, np.float64)


def _reduce(x: np.ndarray):
    """x = k ln 2 + r with integer k and |r| <= ln(2) / 2; returns k and expm1(r), the latter
    from the Taylor series of exp(r) - 1 (Horner)."""
    k = np.rint(x * _INV_LN2)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    poly = np.full_like(r, _EXPM1_COEFFS[-1])
    for c in reversed(_EXPM1_COEFFS[:-1]):
        poly = poly * r + c
    return k, r + (r * r) * poly


def exp(x: np.ndarray) -> np.ndarray:
    """exp(x) = 2^k (expm1(r) + 1) for float64 x in [-700, 700]."""
    k, em1_r = _reduce(np.asarray(x, np.float64))
    return np.ldexp(em1_r + 1.0, k.astype(np.int64))


def expm1(x: np.ndarray) -> np.ndarray:
    """exp(x) - 1 for float64 x in [-700, 700], accurate near 0 too."""
    x = np.asarray(x, np.float64)
    k, em1_r = _reduce(x)
    return np.where(k == 0, em1_r, np.ldexp(em1_r + 1.0, k.astype(np.int64)) - 1.0)


def tanh(x: np.ndarray) -> np.ndarray:
    """tanh(x) = sign(x) e / (e + 2) with e = expm1(2 |x|); exactly +-1 beyond |x| = 20."""
    x = np.asarray(x, np.float64)
    e = expm1(2.0 * np.minimum(np.abs(x), 20.0))
    magnitude = e / (e + 2.0)
    return np.where(x < 0, -magnitude, magnitude)


def log(x: np.ndarray) -> np.ndarray:
    """log(x) for positive finite float64 x: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
    log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its odd series to s^29."""
    m, e = np.frexp(np.asarray(x, np.float64))  # m in [0.5, 1)
    low = m < _SQRT_HALF
    m = np.where(low, m * 2.0, m)
    e = np.where(low, e - 1, e).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    poly = np.full_like(s, 1.0 / 29.0)
    for n in range(27, 0, -2):
        poly = poly * s2 + 1.0 / n
    return (e * _LN2_HI + 2.0 * s * poly) + e * _LN2_LO


def standard_normal(rng: np.random.Generator, shape) -> np.ndarray:
    """N(0, 1) samples by Marsaglia's polar method from `rng.random()` doubles.

    `rng.random()` maps 53 random bits to a double exactly, so the samples depend only on the
    bit stream. (numpy's own `standard_normal` calls libm's log1p and exp in its ziggurat's tails,
    which differ between platforms.) Candidate pairs are drawn in blocks; the accepted ones are
    used in order, so the number of draws is fixed by the bits too."""
    count = int(np.prod(shape))
    samples: list[np.ndarray] = []
    have = 0
    while have < count:
        pairs = max(8, (count - have + 1) // 2 * 4 // 3 + 4)  # accepted with probability pi/4
        uv = rng.random((pairs, 2)) * 2.0 - 1.0
        s = uv[:, 0] * uv[:, 0] + uv[:, 1] * uv[:, 1]
        ok = (s > 0.0) & (s < 1.0)
        uv, s = uv[ok], s[ok]
        factor = np.sqrt((-2.0 * log(s)) / s)
        block = (uv * factor[:, None]).reshape(-1)
        samples.append(block)
        have += len(block)
    return np.concatenate(samples)[:count].reshape(shape)
