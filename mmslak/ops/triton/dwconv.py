"""Triton backend of the depthwise large-kernel convolutions (forward and backward).

Every function computes the 'same' depthwise convolution
``F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=C)`` for odd kernel sides, on CUDA tensors,
or on CPU tensors when the Triton interpreter is on (``TRITON_INTERPRET=1``). fp16 and bf16 accumulate
in fp32, float64 in float64. Autograd is the caller's business (:mod:`mmslak.ops.depthwise`): these are
plain forward / backward functions. Ask :func:`triton_supports` before calling them.
"""
import importlib.util
import os

import torch

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


def _forward_tile(x):
    """(BLOCK_C, BLOCK_P) of the forward kernel for this input's layout (see FORWARD_TILE)."""
    channels, positions = _next_power_of_2(x.shape[1]), _next_power_of_2(x.shape[2] * x.shape[3])
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        block_c = min(channels, CHANNELS_LAST_BLOCK_CHANNELS)
        return block_c, min(positions, FORWARD_TILE // block_c)
    block_p = min(positions, FORWARD_TILE)
    return min(channels, FORWARD_TILE // block_p), block_p


def _accumulator_dtype(dtype):
    import triton.language as tl
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch_forward(x, weights, bias):
    """y = sum of the 'same' depthwise convolutions of x with each kernel in ``weights``, plus bias."""
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    n, channels, height, width = x.shape
    block_c, block_p = _forward_tile(x)

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
        NUM_BRANCHES=len(weights), HAS_BIAS=bias is not None, ACC_DTYPE=_accumulator_dtype(x.dtype),
        BLOCK_C=block_c, BLOCK_P=block_p)
    return y


def _launch_weight_grad(grad_out, x, weight):
    grad_w = torch.empty_like(weight, memory_format=torch.contiguous_format)
    n, channels, height, width = x.shape
    kh, kw = weight.shape[2:]
    if grad_w.numel() == 0 or n * height * width == 0:
        return grad_w.zero_()
    block_t = min(WEIGHT_GRAD_BLOCK_TAPS, _next_power_of_2(kh * kw))
    block_p = min(WEIGHT_GRAD_TILE // block_t, _next_power_of_2(n * height * width))
    grid = (channels, -(-kh * kw // block_t))
    _kernels().dwconv_weight_grad_kernel[grid](
        grad_out, x, grad_w, n, channels, height, width, *grad_out.stride(), *x.stride(), kh, kw,
        ACC_DTYPE=_accumulator_dtype(x.dtype), BLOCK_T=block_t, BLOCK_P=block_p)
    return grad_w


def _flipped(weight):
    # For odd kernels with 'same' padding, the input gradient is the 'same' convolution of grad_out with
    # the kernel rotated by 180 degrees.
    return weight.flip((2, 3))


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
    weights = [w_long, w_wide] + ([w_small] if w_small is not None else [])
    return _launch_forward(x, weights, bias)


def triton_decomposed_backward(grad_out, x, w_long, w_wide, w_small=None, need_input=True,
                               need_weight=True):
    """Gradients of :func:`triton_decomposed_forward`.

    Returns:
        tuple: (grad_x, grad_long, grad_wide, grad_small); grad_x is None unless ``need_input``, the
        weight gradients are None unless ``need_weight``, grad_small is None when ``w_small`` is None.
    """
    weights = [w_long, w_wide] + ([w_small] if w_small is not None else [])
    grad_x = None
    if need_input:
        grad_x = _launch_forward(grad_out, [_flipped(weight) for weight in weights], None)
    grad_weights = [None, None, None]
    if need_weight:
        for index, weight in enumerate(weights):
            grad_weights[index] = _launch_weight_grad(grad_out, x, weight)
    return (grad_x, *grad_weights)
