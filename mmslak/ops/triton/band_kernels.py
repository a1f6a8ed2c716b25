"""Tensor-core Triton kernels of the large-kernel depthwise convolutions (imported lazily by :mod:`.dwconv`).

Along its long axis a depthwise convolution is a matmul with a banded (Toeplitz) matrix built from one
kernel column, so ``tl.dot`` runs it on tensor cores:

* forward (also the input gradient, with flipped kernels): one program owns a ``BH x BW`` output tile of
  one (image, channel) plane. For a kernel long along H (``K x n``), each of its n columns j adds
  ``band_j @ x_j``: ``band_j[a, b] = k[b - a, j]`` (``BH x BK``, zero off the band) times ``BK`` input
  rows shifted by ``j`` along W, in chunks of ``BK`` rows over the ``BH + K - 1`` rows the tile needs.
  A kernel long along W (``n x K``, and dense ``K x K`` ones) is the transpose: each of its rows i adds
  ``x_i @ band_i``. A SLaK block passes its (K, n) kernel as the first and its (n, K) kernel (with the
  (n, n) one added in its centre) as the second. The direct multiply-adds are ``K`` per output and tap
  column; the band costs ``BK * ceil((BH + K - 1) / BK)`` at the tensor-core rate.
* weight gradient: ``g_w[i, j] = sum over positions of grad[h, w] * x[h + i - K // 2, w + j - n // 2]``.
  For a kernel long along H, one program owns one channel and one column j and, per tile of ``BT``
  output rows, forms ``P = X_j @ G^T`` (``BQ x BT``, ``P[q, h] = sum_w x[h0 - K // 2 + q, w + j'] *
  grad[h0 + h, w]``) reduced over W in ``BC``-column chunks on tensor cores; then
  ``g_w[i, j] += sum_h P[h + i, h]``, a diagonal gathered with ``tl.gather``. A kernel long along W
  runs the same kernel on the transposed planes (strides swapped). Each tap is written by one
  program: deterministic, no atomics.

fp16 and bf16 run the dots natively with fp32 accumulation; fp32 uses ``input_precision='tf32x3'``
(three TF32 products, about fp32 error). Zero padding is a masked load; chunks and kernel rows that
cannot meet the image are skipped through the loop bounds.
"""
import triton
import triton.language as tl


@triton.jit
def _long_h_branch(acc, x_plane, h0, w0, H, W, stride_h, stride_w, w_ptr, KH, KW,
                   PRECISION: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, BK: tl.constexpr):
    """acc[BH, BW] += conv of the tile with a (KH, KW) kernel, as sum over columns j of band_j @ x_j."""
    pad_h = KH // 2
    pad_w = KW // 2
    out_rows = tl.arange(0, BH)
    taps = tl.arange(0, BK)
    cols = w0 + tl.arange(0, BW)
    # Input rows h0 - pad_h + [first, last) are the ones inside the image that the tile needs.
    first = tl.maximum(pad_h - h0, 0)
    last = tl.minimum(BH + KH - 1, H + pad_h - h0)
    for j in range(0, KW):
        ws = cols + (j - pad_w)
        col_ok = (ws >= 0) & (ws < W)
        for chunk in range(first, last, BK):
            hs = h0 - pad_h + chunk + taps
            x_ok = ((hs >= 0) & (hs < H))[:, None] & col_ok[None, :]
            xv = tl.load(x_plane + hs[:, None] * stride_h + ws[None, :] * stride_w, mask=x_ok, other=0.0)
            tap = chunk + taps[None, :] - out_rows[:, None]
            band = tl.load(w_ptr + tap * KW + j, mask=(tap >= 0) & (tap < KH), other=0.0)
            acc = tl.dot(band, xv, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _long_w_branch(acc, x_plane, h0, w0, H, W, stride_h, stride_w, w_ptr, KH, KW,
                   PRECISION: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, BK: tl.constexpr):
    """acc[BH, BW] += conv of the tile with a (KH, KW) kernel, as sum over rows i of x_i @ band_i."""
    pad_h = KH // 2
    pad_w = KW // 2
    rows = h0 + tl.arange(0, BH)
    taps = tl.arange(0, BK)
    out_cols = tl.arange(0, BW)
    first = tl.maximum(pad_w - w0, 0)
    last = tl.minimum(BW + KW - 1, W + pad_w - w0)
    # Kernel rows i for which some row of the tile, shifted by i - pad_h, is inside the image.
    row_lo = tl.maximum(pad_h - h0 - BH + 1, 0)
    row_hi = tl.minimum(KH, H + pad_h - h0)
    for i in range(row_lo, row_hi):
        hs = rows + (i - pad_h)
        row_ok = (hs >= 0) & (hs < H)
        for chunk in range(first, last, BK):
            ws = w0 - pad_w + chunk + taps
            x_ok = row_ok[:, None] & ((ws >= 0) & (ws < W))[None, :]
            xv = tl.load(x_plane + hs[:, None] * stride_h + ws[None, :] * stride_w, mask=x_ok, other=0.0)
            tap = chunk + taps[:, None] - out_cols[None, :]
            band = tl.load(w_ptr + i * KW + tap, mask=(tap >= 0) & (tap < KW), other=0.0)
            acc = tl.dot(xv, band, acc, input_precision=PRECISION)
    return acc


@triton.jit
def band_forward_kernel(
        x_ptr, y_ptr, bias_ptr,
        C, H, W, row_tiles, col_tiles,
        stride_xn, stride_xc, stride_xh, stride_xw,
        stride_yn, stride_yc, stride_yh, stride_yw,
        long_h_ptr, KH_H, KW_H, long_w_ptr, KH_W, KW_W,
        HAS_LONG_H: tl.constexpr, HAS_LONG_W: tl.constexpr, HAS_BIAS: tl.constexpr,
        PRECISION: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, BK: tl.constexpr):
    """y = conv(x, long_h kernel) + conv(x, long_w kernel) (+ bias), 'same' depthwise.

    One-dimensional grid of N * C * row_tiles * col_tiles programs, the tiles of a plane consecutive (they
    share their halo in L2).
    """
    pid = tl.program_id(0)
    plane = pid // (row_tiles * col_tiles)
    tile = pid % (row_tiles * col_tiles)
    h0 = (tile // col_tiles) * BH
    w0 = (tile % col_tiles) * BW
    n = plane // C
    c = plane % C
    x_plane = x_ptr + n.to(tl.int64) * stride_xn + c.to(tl.int64) * stride_xc
    acc = tl.zeros([BH, BW], dtype=tl.float32)
    if HAS_LONG_H:
        acc = _long_h_branch(acc, x_plane, h0, w0, H, W, stride_xh, stride_xw,
                             long_h_ptr + c * (KH_H * KW_H), KH_H, KW_H, PRECISION, BH, BW, BK)
    if HAS_LONG_W:
        acc = _long_w_branch(acc, x_plane, h0, w0, H, W, stride_xh, stride_xw,
                             long_w_ptr + c * (KH_W * KW_W), KH_W, KW_W, PRECISION, BH, BW, BK)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c).to(tl.float32)
    rows = h0 + tl.arange(0, BH)
    cols = w0 + tl.arange(0, BW)
    y_plane = y_ptr + n.to(tl.int64) * stride_yn + c.to(tl.int64) * stride_yc
    tl.store(y_plane + rows[:, None] * stride_yh + cols[None, :] * stride_yw, acc.to(y_ptr.dtype.element_ty),
             mask=(rows < H)[:, None] & (cols < W)[None, :])


@triton.jit
def band_weight_grad_kernel(
        grad_ptr, x_ptr, grad_w_ptr,
        N, C, L, S,
        stride_gn, stride_gc, stride_gl, stride_gs,
        stride_xn, stride_xc, stride_xl, stride_xs,
        K_LONG, K_SHORT, out_stride_long, out_stride_short,
        PRECISION: tl.constexpr, BT: tl.constexpr, BQ: tl.constexpr, BKP: tl.constexpr,
        BC: tl.constexpr):
    """grad_w[c, k, s] = sum over n, l, r of grad[n, c, l, r] * x[n, c, l + k - K_LONG // 2,
    r + s - K_SHORT // 2] for a (K_LONG, K_SHORT) kernel: tap k along the long axis (length L), s along
    the other one (length S, the axis the dots reduce over).

    A kernel long along H passes the planes as they are; one long along W passes them transposed
    (H and W, their strides and the output strides swapped). Grid (C, K_SHORT): a program owns one
    channel and one short tap s. ``BT`` output positions along L per tile, ``BQ >= BT + K_LONG - 1``
    input positions, ``BKP >= K_LONG`` taps, ``BC`` positions along S per dot.
    """
    c = tl.program_id(0)
    short = tl.program_id(1)
    pad_long = K_LONG // 2
    t = tl.arange(0, BT)
    q = tl.arange(0, BQ)
    reduce = tl.arange(0, BC)
    taps = tl.arange(0, BKP)
    # diagonal[k, t] = t + k: where tap k of output position t sits in P; clamped where k >= K_LONG.
    diagonal = tl.minimum(taps[:, None] + t[None, :], BQ - 1)
    acc = tl.zeros([BKP], dtype=tl.float32)
    # Plane pointers advance image by image (64-bit pointer arithmetic: no n * stride overflow).
    g_plane = grad_ptr + c.to(tl.int64) * stride_gc
    x_plane = x_ptr + c.to(tl.int64) * stride_xc
    for _ in range(0, N):
        for l0 in range(0, L, BT):
            ls = l0 - pad_long + q
            x_long_ok = (ls >= 0) & (ls < L)
            g_long = l0 + t
            product = tl.zeros([BQ, BT], dtype=tl.float32)
            for r0 in range(0, S, BC):
                rs = r0 + reduce
                shifted = rs + (short - K_SHORT // 2)
                xv = tl.load(x_plane + ls[:, None] * stride_xl + shifted[None, :] * stride_xs,
                             mask=x_long_ok[:, None] & ((shifted >= 0) & (shifted < S))[None, :], other=0.0)
                gv = tl.load(g_plane + rs[:, None] * stride_gs + g_long[None, :] * stride_gl,
                             mask=(rs < S)[:, None] & (g_long < L)[None, :], other=0.0)
                # product[q, t] = sum_r x[l0 - pad_long + q, r + s'] * grad[l0 + t, r]
                product = tl.dot(xv, gv, product, input_precision=PRECISION)
            # grad_w[k, s] += sum_t product[t + k, t]
            acc += tl.sum(tl.gather(product, diagonal, axis=0), axis=1)
        g_plane += stride_gn
        x_plane += stride_xn
    out = grad_w_ptr + c * (K_LONG * K_SHORT) + taps * out_stride_long + short * out_stride_short
    tl.store(out, acc.to(grad_w_ptr.dtype.element_ty), mask=taps < K_LONG)
