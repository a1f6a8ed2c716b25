"""Triton kernels of the depthwise 'same' convolutions (imported lazily by :mod:`.dwconv`).

Importing this module requires triton; whether the kernels are compiled for the GPU or run by the
interpreter is decided by ``TRITON_INTERPRET`` when triton is first imported.

Layout of the work:

* forward (also used for the input gradient with flipped kernels): one program owns a tile of
  ``BLOCK_C`` channels x ``BLOCK_P`` flattened output positions (h * W + w) of one image, and walks the
  kernel taps of up to three branches, accumulating in ``ACC_DTYPE``. For NCHW the wrapper picks
  ``BLOCK_C = 1`` so that loads are coalesced along W; for channels_last it picks a wide ``BLOCK_C``
  so that loads are coalesced along C. Zero padding is a masked load; kernel rows and columns that can
  never overlap the image are skipped through the loop bounds computed by the wrapper.
* weight gradient: one program owns one channel and ``BLOCK_T`` consecutive taps of the flattened
  kernel, and reduces grad_out x shifted input over all images and positions in ``BLOCK_P`` chunks.
  Each tap is written by exactly one program, so the result is deterministic (no atomics).
"""
import triton
import triton.language as tl


@triton.jit
def _accumulate_branch(acc, x_tile_ptr, h, w, position_ok, c, channel_ok, H, W, stride_h, stride_w,
                       w_ptr, KH, KW, row_lo, row_hi, col_lo, col_hi, ACC_DTYPE: tl.constexpr):
    """Add the contribution of one (KH, KW) kernel to ``acc`` [BLOCK_C, BLOCK_P]."""
    pad_h = KH // 2
    pad_w = KW // 2
    for i in range(row_lo, row_hi):
        hs = h + (i - pad_h)
        row_ok = position_ok & (hs >= 0) & (hs < H)
        for j in range(col_lo, col_hi):
            ws = w + (j - pad_w)
            ok = channel_ok[:, None] & (row_ok & (ws >= 0) & (ws < W))[None, :]
            xv = tl.load(x_tile_ptr + (hs * stride_h + ws * stride_w)[None, :], mask=ok, other=0.0)
            wv = tl.load(w_ptr + c * (KH * KW) + (i * KW + j), mask=channel_ok, other=0.0)
            acc += xv.to(ACC_DTYPE) * wv.to(ACC_DTYPE)[:, None]
    return acc


@triton.jit
def dwconv_forward_kernel(
        x_ptr, y_ptr, bias_ptr,
        C, H, W, channel_blocks, position_blocks,
        stride_xn, stride_xc, stride_xh, stride_xw,
        stride_yn, stride_yc, stride_yh, stride_yw,
        w0_ptr, KH0, KW0, row_lo0, row_hi0, col_lo0, col_hi0,
        w1_ptr, KH1, KW1, row_lo1, row_hi1, col_lo1, col_hi1,
        w2_ptr, KH2, KW2, row_lo2, row_hi2, col_lo2, col_hi2,
        NUM_BRANCHES: tl.constexpr, HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """y = sum over branches b of depthwise_same_conv(x, w_b) (+ bias).

    One-dimensional grid of N * channel_blocks * position_blocks programs (cdiv(C, BLOCK_C) and
    cdiv(H * W, BLOCK_P)): CUDA caps the other grid axes at 65535, which N * C or H * W can exceed.
    Consecutive programs take neighbouring tiles of the same planes, which share their halo in L2.
    """
    plane_block = tl.program_id(0) // position_blocks
    n = plane_block // channel_blocks
    c = (plane_block % channel_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = c < C
    p = (tl.program_id(0) % position_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    position_ok = p < H * W
    h = p // W
    w = p % W

    # Image and channel offsets in int64: N * C * H * W may exceed 2**31 elements.
    x_tile_ptr = x_ptr + n.to(tl.int64) * stride_xn + c.to(tl.int64)[:, None] * stride_xc
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC_DTYPE)
    acc = _accumulate_branch(acc, x_tile_ptr, h, w, position_ok, c, channel_ok, H, W, stride_xh,
                             stride_xw, w0_ptr, KH0, KW0, row_lo0, row_hi0, col_lo0, col_hi0, ACC_DTYPE)
    if NUM_BRANCHES > 1:
        acc = _accumulate_branch(acc, x_tile_ptr, h, w, position_ok, c, channel_ok, H, W, stride_xh,
                                 stride_xw, w1_ptr, KH1, KW1, row_lo1, row_hi1, col_lo1, col_hi1,
                                 ACC_DTYPE)
    if NUM_BRANCHES > 2:
        acc = _accumulate_branch(acc, x_tile_ptr, h, w, position_ok, c, channel_ok, H, W, stride_xh,
                                 stride_xw, w2_ptr, KH2, KW2, row_lo2, row_hi2, col_lo2, col_hi2,
                                 ACC_DTYPE)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=channel_ok, other=0.0).to(ACC_DTYPE)[:, None]

    y_tile_ptr = y_ptr + n.to(tl.int64) * stride_yn + c.to(tl.int64)[:, None] * stride_yc
    tl.store(y_tile_ptr + (h * stride_yh + w * stride_yw)[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=channel_ok[:, None] & position_ok[None, :])


@triton.jit
def dwconv_weight_grad_kernel(
        grad_ptr, x_ptr, grad_w_ptr,
        N, C, H, W,
        stride_gn, stride_gc, stride_gh, stride_gw,
        stride_xn, stride_xc, stride_xh, stride_xw,
        KH, KW,
        ACC_DTYPE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad_w[c, t] = sum over n, h, w of grad[n, c, h, w] * x[n, c, h + i - KH//2, w + j - KW//2]
    with t = i * KW + j; grid (C, cdiv(KH * KW, BLOCK_T))."""
    c = tl.program_id(0)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    tap_ok = t < KH * KW
    shift_h = t // KW - KH // 2
    shift_w = t % KW - KW // 2

    grad_plane_ptr = grad_ptr + c.to(tl.int64) * stride_gc
    x_plane_ptr = x_ptr + c.to(tl.int64) * stride_xc
    plane_size = H * W
    acc = tl.zeros([BLOCK_T, BLOCK_P], dtype=ACC_DTYPE)
    for start in range(0, N * plane_size, BLOCK_P):
        p = start + tl.arange(0, BLOCK_P)
        position_ok = p < N * plane_size
        n = (p // plane_size).to(tl.int64)
        h = (p % plane_size) // W
        w = p % W
        g = tl.load(grad_plane_ptr + n * stride_gn + h * stride_gh + w * stride_gw, mask=position_ok,
                    other=0.0)
        hs = h[None, :] + shift_h[:, None]
        ws = w[None, :] + shift_w[:, None]
        ok = (tap_ok[:, None] & position_ok[None, :] & (hs >= 0) & (hs < H) & (ws >= 0) & (ws < W))
        xv = tl.load(x_plane_ptr + n[None, :] * stride_xn + hs * stride_xh + ws * stride_xw, mask=ok,
                     other=0.0)
        acc += xv.to(ACC_DTYPE) * g.to(ACC_DTYPE)[None, :]
    tl.store(grad_w_ptr + c * (KH * KW) + t, tl.sum(acc, axis=1).to(grad_w_ptr.dtype.element_ty),
             mask=tap_ok)
