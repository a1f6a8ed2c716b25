"""Triton kernels of the peripheral depthwise convolution (imported lazily by :mod:`.peripheral`).

The separable box-filter algorithm of :mod:`mmslak.ops.peripheral`, in three kernels over NCHW planes
(cell-major intermediates of shape (k', N, C, H, W), accumulated in ``ACC_DTYPE``):

* ``row_box_kernel``: one program per output row and ``BLOCK_Q`` columns sums the input rows of every
  cell (``R_a``) and, with ``MIX``, combines them into ``T_b = Σ_a w[a, b] R_a`` at once;
* ``col_box_kernel``: sums ``BLOCK_Q`` columns of each cell along W; with ``SUM`` it adds the box of
  cell b of ``T_b`` over all b (the forward output), otherwise it writes one box per cell (``G_b``);
* ``grad_weight_kernel``: one program per channel reduces ``R_a · G_b`` over images and positions
  with ``tl.dot`` (IEEE fp32, no TF32 rounding); every output is written by one program, no atomics.

Cell boundaries come from an int32 table of k' + 1 offsets; zero padding is a clipped row range
(along H) or a masked load (along W).
"""
import triton
import triton.language as tl


@triton.jit
def row_box_kernel(x_ptr, w_ptr, offsets_ptr, out_ptr, C, H, W, cells, half, cell_stride,
                   MIX: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK_CELLS: tl.constexpr,
                   BLOCK_Q: tl.constexpr):
    """out[b, plane, p, q] = Σ_a m[a, b] Σ_{rows i of cell a} x[plane, p + i - half, q].

    ``m`` is the channel's weight with ``MIX``, the identity otherwise. Grid: (planes * H, cdiv(W, BLOCK_Q)).
    """
    row = tl.program_id(0)
    plane = row // H
    p = row % H
    c = plane % C
    q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = q < W
    b = tl.arange(0, BLOCK_CELLS)
    b_ok = b < cells
    plane_ptr = x_ptr + plane.to(tl.int64) * H * W
    acc = tl.zeros([BLOCK_CELLS, BLOCK_Q], dtype=ACC_DTYPE)
    for a in range(0, cells):
        first = tl.maximum(tl.load(offsets_ptr + a) + p - half, 0)
        last = tl.minimum(tl.load(offsets_ptr + a + 1) + p - half, H)
        box = tl.zeros([BLOCK_Q], dtype=ACC_DTYPE)
        for i in range(first, last):
            box += tl.load(plane_ptr + i * W + q, mask=q_ok, other=0.0).to(ACC_DTYPE)
        if MIX:
            coeff = tl.load(w_ptr + c * cells * cells + a * cells + b, mask=b_ok, other=0.0).to(ACC_DTYPE)
        else:
            coeff = (b == a).to(ACC_DTYPE)
        acc += coeff[:, None] * box[None, :]
    out = out_ptr + b.to(tl.int64)[:, None] * cell_stride + plane.to(tl.int64) * H * W + p * W + q[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=b_ok[:, None] & q_ok[None, :])


@triton.jit
def col_box_kernel(t_ptr, offsets_ptr, bias_ptr, out_ptr, C, H, W, cells, half, cell_stride,
                   SUM: tl.constexpr, HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr,
                   BLOCK_Q: tl.constexpr):
    """Column boxes. With SUM, the forward output
    ``out[plane, p, q] = bias + Σ_b Σ_{cols j of cell b} t[b, plane, p, q + j - half]``;
    otherwise one box per cell, ``out[b, plane, p, q] = Σ_{cols j of cell b} t[plane, p, q + j - half]``.

    Grid: (planes * H, cdiv(W, BLOCK_Q)).
    """
    row = tl.program_id(0)
    plane = row // H
    q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = q < W
    row_offset = row.to(tl.int64) * W
    # Pointers advance cell by cell (no index b * cell_stride, which could overflow int32).
    src_ptr = t_ptr + row_offset  # row of T_b with SUM, the one input row otherwise
    dst_ptr = out_ptr + row_offset  # row of output cell b without SUM
    total = tl.zeros([BLOCK_Q], dtype=ACC_DTYPE)
    for b in range(0, cells):
        box = tl.zeros([BLOCK_Q], dtype=ACC_DTYPE)
        for j in range(tl.load(offsets_ptr + b), tl.load(offsets_ptr + b + 1)):
            col = q + j - half
            box += tl.load(src_ptr + col, mask=q_ok & (col >= 0) & (col < W), other=0.0).to(ACC_DTYPE)
        if SUM:
            total += box
            src_ptr += cell_stride
        else:
            tl.store(dst_ptr + q, box.to(out_ptr.dtype.element_ty), mask=q_ok)
            dst_ptr += cell_stride
    if SUM:
        if HAS_BIAS:
            total += tl.load(bias_ptr + plane % C).to(ACC_DTYPE)
        tl.store(out_ptr + row_offset + q, total.to(out_ptr.dtype.element_ty), mask=q_ok)


@triton.jit
def grad_weight_kernel(r_ptr, g_ptr, out_ptr, N, C, plane_size, cells, cell_stride,
                       ACC_DTYPE: tl.constexpr, BLOCK_CELLS: tl.constexpr, BLOCK_P: tl.constexpr):
    """out[c, a, b] = Σ_{n, positions} r[a, n, c, pos] · g[b, n, c, pos]. Grid: (C,)."""
    c = tl.program_id(0)
    cell = tl.arange(0, BLOCK_CELLS)
    cell_ok = cell < cells
    acc = tl.zeros([BLOCK_CELLS, BLOCK_CELLS], dtype=ACC_DTYPE)
    for n in range(0, N):
        plane_offset = (n * C + c).to(tl.int64) * plane_size
        for start in range(0, plane_size, BLOCK_P):
            pos = start + tl.arange(0, BLOCK_P)
            pos_ok = pos < plane_size
            r = tl.load(r_ptr + cell.to(tl.int64)[:, None] * cell_stride + plane_offset + pos[None, :],
                        mask=cell_ok[:, None] & pos_ok[None, :], other=0.0)
            g = tl.load(g_ptr + cell.to(tl.int64)[None, :] * cell_stride + plane_offset + pos[:, None],
                        mask=pos_ok[:, None] & cell_ok[None, :], other=0.0)
            acc += tl.dot(r, g, input_precision='ieee', out_dtype=ACC_DTYPE)
    out = out_ptr + c * cells * cells + cell[:, None] * cells + cell[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=cell_ok[:, None] & cell_ok[None, :])
