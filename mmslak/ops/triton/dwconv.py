"""Triton backend of the depthwise large-kernel convolutions (forward and backward).

Every function computes the 'same' depthwise convolution
``F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=C)`` for odd kernel sides, on CUDA tensors,
or on CPU tensors when the Triton interpreter is on (``TRITON_INTERPRET=1``). fp16 and bf16 accumulate
in fp32, float64 in float64. Autograd is the caller's business (:mod:`mmslak.ops.depthwise`): these are
plain forward / backward functions. Ask :func:`triton_supports` before calling them.

Two kernel families run the work, and :func:`uses_band` is the one rule that picks between them: the
tensor-core band kernels (:mod:`.band_kernels`) for long kernels in fp32/fp16/bf16, and the direct
kernels (:mod:`.kernels`, one multiply-add per tap on CUDA cores) for small kernels, tiny maps and
float64.
"""
import importlib.util
import os

import torch
import torch.nn.functional as F

from ..common import memory_format_of

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
MAX_BRANCHES = 3
# Forward tile: channels x positions per program. Positions are the contiguous axis of NCHW, so they
# fill the tile first (small late-stage feature maps then share a program between channels); channels
# are the contiguous axis of channels_last, so up to a warp's worth of channels go first there.
FORWARD_TILE = 512
CHANNELS_LAST_BLOCK_CHANNELS = 32
# Weight gradient: taps x positions per program. ptxas for sm_80 gives 8 x 256 fp32 56 registers and no
# spills (16 x 256: 163), which leaves room for the occupancy its gathered loads need.
WEIGHT_GRAD_BLOCK_TAPS = 8
WEIGHT_GRAD_TILE = 2048
# Band kernels: a kernel side of at least BAND_MIN_LONG_SIDE taps makes the banded matmul worth its
# (tile + K - 1) / K extra multiply-adds at the tensor-core rate; maps under BAND_MIN_POSITIONS positions
# leave most of a 16 x 16 dot tile empty.
BAND_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BAND_MIN_LONG_SIDE = 9
BAND_MIN_POSITIONS = 64
BAND_TILE = 64  # forward output tile side, at most
BAND_GRAD_TILE = 16  # weight gradient: output rows (columns) per product P; BQ = pow2(16 + K - 1)
BAND_GRAD_WARPS = 8
# Input rows (columns) per forward dot and positions reduced per weight-gradient dot. tf32x3 splits
# every fp32 operand in two, so fp32 takes half the chunk: ptxas for sm_90 then gives the forward 238
# registers and no spills, where a 32 chunk spills.
BAND_CHUNK = {torch.float32: 16, torch.float16: 32, torch.bfloat16: 32}


def is_available():
    """Whether triton can be imported (it is not a hard dependency of mmslak)."""
    return importlib.util.find_spec('triton') is not None


def _interpreter_requested():
    # Read like triton does, without importing triton (importing it fixes the interpreter mode).
    return os.environ.get('TRITON_INTERPRET', '0').lower() in ('1', 'true', 'on')


def _interpreter_active():
    """Whether triton runs jit functions interpreted in this process.

    triton decides this for its own language library when it is first imported, so setting
    TRITON_INTERPRET=1 afterwards is not enough.
    """
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    # tl.zeros is one of the library functions the kernels call that triton jit-decorates on import.
    return isinstance(tl.zeros, InterpretedFunction)


def _kernels():
    if not is_available():
        raise ImportError('The Triton backend of mmslak.ops needs the `triton` package (shipped with the '
                          'CUDA builds of torch); install it or use another backend.')
    from . import kernels
    return kernels


def _band_kernels():
    _kernels()
    from . import band_kernels
    return band_kernels


def triton_supports(x, *weights):
    """Whether the Triton kernels can run on these tensors.

    Args:
        x (Tensor): input (N, C, H, W).
        *weights (Tensor | None): kernels (C, 1, kh, kw) and optionally the bias (C,); None is skipped.

    Returns:
        tuple[bool, str]: (True, '') or (False, a reason meant for a human).
    """
    if not is_available():
        return False, 'triton is not installed'
    if x.dim() != 4:
        return False, f'x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}'
    if x.dtype not in SUPPORTED_DTYPES:
        return False, f'dtype {x.dtype} is not supported (supported: fp32, fp16, bf16, fp64)'
    if x.device.type == 'cpu':
        if not _interpreter_requested():
            return False, 'CPU tensors run only under the Triton interpreter (set TRITON_INTERPRET=1)'
        if not _interpreter_active():
            return False, ('triton was imported before TRITON_INTERPRET=1 was set, so its interpreter is '
                           'off in this process; set the variable before anything imports triton')
    elif x.device.type != 'cuda':
        return False, f'device {x.device} is not supported (CUDA, or CPU under the interpreter)'
    try:
        _kernels()
    except ImportError as error:  # a triton that is installed but broken
        return False, f'the Triton kernels cannot be imported: {error}'
    channels = x.shape[1]
    for tensor in weights:
        if tensor is None:
            continue
        if tensor.device != x.device or tensor.dtype != x.dtype:
            return False, (f'weights must be on the device and of the dtype of x ({x.device}, {x.dtype}), '
                           f'got {tensor.device}, {tensor.dtype}')
        if tensor.dim() == 1:
            if tensor.shape[0] != channels:
                return False, f'bias must have shape ({channels},), got {tuple(tensor.shape)}'
        elif (tensor.dim() != 4 or tensor.shape[:2] != (channels, 1)
              or any(side % 2 == 0 for side in tensor.shape[2:])):
            return False, (f'weights must have shape (C, 1, kh, kw) with C={channels} and odd kh, kw, '
                           f'got {tuple(tensor.shape)}')
    return True, ''


def _next_power_of_2(value):
    return 1 << (value - 1).bit_length()


def _overlapping_range(kernel_side, image_side):
    """Kernel taps [lo, hi) along one axis that can touch the image for some output position."""
    pad = kernel_side // 2
    return max(0, pad - image_side + 1), min(kernel_side, pad + image_side)


def direct_forward_tile(x):
    """(BLOCK_C, BLOCK_P) of the forward kernel for this input's layout (see FORWARD_TILE)."""
    channels, positions = _next_power_of_2(x.shape[1]), _next_power_of_2(x.shape[2] * x.shape[3])
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        block_c = min(channels, CHANNELS_LAST_BLOCK_CHANNELS)
        return block_c, min(positions, FORWARD_TILE // block_c)
    block_p = min(positions, FORWARD_TILE)
    return min(channels, FORWARD_TILE // block_p), block_p


def accumulator_dtype(dtype):
    """The triton dtype the direct and peripheral kernels accumulate ``dtype`` inputs in."""
    import triton.language as tl
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch_direct_forward(x, weights, bias):
    """y = sum of the 'same' depthwise convolutions of x with each kernel in ``weights``, plus bias."""
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    n, channels, height, width = x.shape
    block_c, block_p = direct_forward_tile(x)

    branch_args = []
    for weight in weights:
        kh, kw = weight.shape[2:]
        branch_args += [weight.contiguous(), kh, kw, *_overlapping_range(kh, height),
                        *_overlapping_range(kw, width)]
    # Unused branch slots still need valid arguments; NUM_BRANCHES keeps the kernel from reading them.
    branch_args += branch_args[:7] * (MAX_BRANCHES - len(weights))

    channel_blocks = -(-channels // block_c)
    position_blocks = -(-height * width // block_p)
    grid = (n * channel_blocks * position_blocks, )
    _kernels().dwconv_forward_kernel[grid](
        x, y, bias if bias is not None else x,
        channels, height, width, channel_blocks, position_blocks, *x.stride(), *y.stride(), *branch_args,
        NUM_BRANCHES=len(weights), HAS_BIAS=bias is not None, ACC_DTYPE=accumulator_dtype(x.dtype),
        BLOCK_C=block_c, BLOCK_P=block_p)
    return y


def _launch_direct_weight_grad(grad_out, x, weight, grad_w):
    n, channels, height, width = x.shape
    kh, kw = weight.shape[2:]
    block_t = min(WEIGHT_GRAD_BLOCK_TAPS, _next_power_of_2(kh * kw))
    block_p = min(WEIGHT_GRAD_TILE // block_t, _next_power_of_2(n * height * width))
    grid = (channels, -(-kh * kw // block_t))
    _kernels().dwconv_weight_grad_kernel[grid](
        grad_out, x, grad_w, n, channels, height, width, *grad_out.stride(), *x.stride(), kh, kw,
        ACC_DTYPE=accumulator_dtype(x.dtype), BLOCK_T=block_t, BLOCK_P=block_p)


# ----------------------------------------------------------------------------- band (tensor-core) kernels


def is_long_along_h(weight):
    """Whether a (C, 1, kh, kw) kernel goes to the long-along-H slot of the band kernels (else the
    long-along-W one, which also takes square kernels)."""
    return weight.shape[2] > weight.shape[3]


def uses_band(x, weights):
    """Whether the tensor-core band kernels run these kernels on x (else the direct kernels do).

    The rule: fp32, fp16 or bf16; a map of at least BAND_MIN_POSITIONS positions; every kernel at least
    BAND_MIN_LONG_SIDE long; at most one kernel long along H and one long along W or square (the two
    slots of :func:`band_kernels.band_forward_kernel`).
    """
    if x.dtype not in BAND_DTYPES or x.shape[2] * x.shape[3] < BAND_MIN_POSITIONS or not weights:
        return False
    if any(max(weight.shape[2:]) < BAND_MIN_LONG_SIDE for weight in weights):
        return False
    long_h = sum(is_long_along_h(weight) for weight in weights)
    return long_h <= 1 and len(weights) - long_h <= 1


def dot_precision(dtype):
    """``tl.dot`` input precision: tf32x3 keeps fp32 inputs at about fp32 error; 16-bit inputs are exact."""
    return 'tf32x3' if dtype == torch.float32 else 'ieee'


def _band_tile(side):
    return max(16, min(BAND_TILE, _next_power_of_2(side)))


def band_forward_config(x):
    """(BH, BW, BK) of :func:`band_kernels.band_forward_kernel` for this input."""
    tile_h, tile_w = _band_tile(x.shape[2]), _band_tile(x.shape[3])
    return tile_h, tile_w, min(BAND_CHUNK[x.dtype], tile_h, tile_w)


def band_weight_grad_config(weight, x):
    """(BT, BQ, BKP, BC, num_warps) of :func:`band_kernels.band_weight_grad_kernel` for this kernel and x.

    With 8 warps ptxas gives every SLaK and PeLK configuration no spills for sm_80 and sm_90, where
    4 spill on sm_80 (``tools/analysis/inspect_triton_kernels.py``).
    """
    long_h = is_long_along_h(weight)
    side = weight.shape[2] if long_h else weight.shape[3]
    reduced = x.shape[3] if long_h else x.shape[2]  # the axis a dot reduces over
    return (BAND_GRAD_TILE, _next_power_of_2(BAND_GRAD_TILE + side - 1), max(16, _next_power_of_2(side)),
            max(16, min(BAND_CHUNK[x.dtype], _next_power_of_2(reduced))), BAND_GRAD_WARPS)


def _launch_band_forward(x, weights, bias):
    if not x.is_contiguous():
        # The band kernels load rows of a plane; in channels_last those are strided by C, so they run on
        # an NCHW copy (two memory passes, small next to the compute of a long kernel).
        result = _launch_band_forward(x.contiguous(), weights, bias)
        return result.contiguous(memory_format=memory_format_of(x))
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    long_h = next((w for w in weights if is_long_along_h(w)), None)
    long_w = next((w for w in weights if not is_long_along_h(w)), None)
    present = (long_h if long_h is not None else long_w).contiguous()
    long_h = present if long_h is None else long_h.contiguous()
    long_w = present if long_w is None else long_w.contiguous()
    n, channels, height, width = x.shape
    tile_h, tile_w, chunk = band_forward_config(x)
    row_tiles, col_tiles = -(-height // tile_h), -(-width // tile_w)
    _band_kernels().band_forward_kernel[(n * channels * row_tiles * col_tiles, )](
        x, y, bias if bias is not None else x, channels, height, width, row_tiles, col_tiles,
        *x.stride(), *y.stride(), long_h, *long_h.shape[2:], long_w, *long_w.shape[2:],
        HAS_LONG_H=any(is_long_along_h(w) for w in weights),
        HAS_LONG_W=any(not is_long_along_h(w) for w in weights), HAS_BIAS=bias is not None,
        PRECISION=dot_precision(x.dtype), BH=tile_h, BW=tile_w, BK=chunk)
    return y


def _launch_band_weight_grad(grad_out, x, weight, grad_w):
    grad_out, x = grad_out.contiguous(), x.contiguous()  # rows of planes, as in the forward
    n, channels, height, width = x.shape
    kh, kw = weight.shape[2:]
    tile, rows, taps, chunk, num_warps = band_weight_grad_config(weight, x)
    g_n, g_c, g_h, g_w = grad_out.stride()
    x_n, x_c, x_h, x_w = x.stride()
    if is_long_along_h(weight):
        planes = (height, width, g_n, g_c, g_h, g_w, x_n, x_c, x_h, x_w, kh, kw, kw, 1)
    else:  # the transposed planes, and the transposed kernel written into grad_w
        planes = (width, height, g_n, g_c, g_w, g_h, x_n, x_c, x_w, x_h, kw, kh, 1, kw)
    _band_kernels().band_weight_grad_kernel[(channels, planes[11])](
        grad_out, x, grad_w, n, channels, *planes, PRECISION=dot_precision(x.dtype), BT=tile, BQ=rows,
        BKP=taps, BC=chunk, num_warps=num_warps)


# ----------------------------------------------------------------------------- entry points


def _launch_forward(x, weights, bias):
    if uses_band(x, weights):
        return _launch_band_forward(x, weights, bias)
    return _launch_direct_forward(x, weights, bias)


def _launch_weight_grad(grad_out, x, weight):
    grad_w = torch.empty_like(weight, memory_format=torch.contiguous_format)
    if grad_w.numel() == 0 or x.shape[0] * x.shape[2] * x.shape[3] == 0:
        return grad_w.zero_()
    launch = _launch_band_weight_grad if uses_band(x, [weight]) else _launch_direct_weight_grad
    launch(grad_out, x, weight, grad_w)
    return grad_w


def _flipped(weight):
    # For odd kernels with 'same' padding, the input gradient is the 'same' convolution of grad_out with
    # the kernel rotated by 180 degrees.
    return weight.flip((2, 3))


def _with_small(w_wide, w_small):
    """The (n, K) kernel with the (n, n) one added in its centre: the 'same' convolutions with both sum
    to the convolution with this one (added in fp32, rounded once to the weights' dtype)."""
    margin = (w_wide.shape[3] - w_small.shape[3]) // 2
    return (w_wide.float() + F.pad(w_small.float(), (margin, margin))).to(w_wide.dtype)


def _centre(grad_wide, w_small):
    """The gradient of the (n, n) kernel: the centre of the gradient of the (n, K) kernel it was added to
    (a tap's gradient depends only on its offset)."""
    margin = (grad_wide.shape[3] - w_small.shape[3]) // 2
    return grad_wide[:, :, :, margin:margin + w_small.shape[3]].contiguous()


def decomposed_launch_weights(x, w_long, w_wide, w_small):
    """The kernels one launch takes, and whether the small one was folded into the wide one."""
    if w_small is None:
        return [w_long, w_wide], False
    folded = [w_long, _with_small(w_wide, w_small)]
    if (uses_band(x, folded) and w_small.shape[2] == w_wide.shape[2]
            and w_small.shape[3] <= w_wide.shape[3]):
        return folded, True
    return [w_long, w_wide, w_small], False


def triton_dwconv2d_forward(x, weight, bias=None):
    """``F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=C)`` with Triton kernels.

    Args:
        x (Tensor): (N, C, H, W), contiguous or channels_last; the output has the same memory format.
        weight (Tensor): (C, 1, kh, kw), kh and kw odd.
        bias (Tensor, optional): (C,).
    """
    return _launch_forward(x, [weight], bias)


def triton_dwconv2d_backward(grad_out, x, weight, need_input=True, need_weight=True):
    """Gradients of :func:`triton_dwconv2d_forward` with respect to x and weight (bias: caller's job).

    Returns:
        tuple[Tensor | None, Tensor | None]: (grad_x, grad_weight), None where not needed.
    """
    grad_x = _launch_forward(grad_out, [_flipped(weight)], None) if need_input else None
    grad_w = _launch_weight_grad(grad_out, x, weight) if need_weight else None
    return grad_x, grad_w


def triton_decomposed_forward(x, w_long, w_wide, w_small=None, bias=None):
    """Sum of the 'same' depthwise convolutions with kernels (K, n), (n, K) and optionally (n, n), plus
    bias, in one kernel pass (x is read once per tile for all branches)."""
    weights, _ = decomposed_launch_weights(x, w_long, w_wide, w_small)
    return _launch_forward(x, weights, bias)


def triton_decomposed_backward(grad_out, x, w_long, w_wide, w_small=None, need_input=True,
                               need_weight=True):
    """Gradients of :func:`triton_decomposed_forward`.

    Returns:
        tuple: (grad_x, grad_long, grad_wide, grad_small); grad_x is None unless ``need_input``, the
        weight gradients are None unless ``need_weight``, grad_small is None when ``w_small`` is None.
    """
    weights, folded = decomposed_launch_weights(x, w_long, w_wide, w_small)
    grad_x = None
    if need_input:
        grad_x = _launch_forward(grad_out, [_flipped(weight) for weight in weights], None)
    grad_weights = [None, None, None]
    if need_weight:
        grad_weights = [_launch_weight_grad(grad_out, x, weight) for weight in weights]
        if folded:  # the wide kernel's gradient is the folded one's; the small one is its centre
            grad_weights.append(_centre(grad_weights[1], w_small))
        grad_weights += [None] * (3 - len(grad_weights))
    return (grad_x, *grad_weights)
