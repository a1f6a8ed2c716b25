"""Backend choice for mmslak's convolution ops: C++ CPU kernels, Triton kernels, or PyTorch.

One function, :func:`select_backend`, picks the implementation of an op family for a call; an op family
describes its backends with a table ``{name: loader}``, so the depthwise convolutions
(:data:`DWCONV_BACKENDS`) and the peripheral convolution share the same rules:

1. ``MMSLAK_DWCONV_BACKEND=cpp|triton|torch`` (read at every call) forces a backend, for tests and for
   users who hit a bug. A forced backend that is not installed, or that refuses the input, raises a
   ``RuntimeError`` saying why: a forced choice never falls back silently, so a test that forces a
   backend really tests it. With ``TRITON_INTERPRET=1``, forcing ``triton`` runs CPU tensors through the
   Triton kernels in the interpreter.
2. Otherwise the device decides: CPU tensors use ``cpp`` then ``torch``, CUDA tensors ``triton`` then
   ``torch``, other devices ``torch``. When a preferred backend is missing or refuses the input, the
   next one is used and a one-time ``RuntimeWarning`` says why (for example "the C++ kernels take
   float32 and float64, got torch.bfloat16").
3. The choice is logged once per op family, device type and backend (``print_log``, level INFO).

A loader is a zero-argument callable returning the backend's implementation object, or raising
``ImportError`` whose message says why the backend is unavailable; it is called at most once. The
implementation object must have ``supports(*tensors) -> (bool, reason)``; the op family decides what
else it holds. For the depthwise family it is a :class:`DwconvBackend`.

Contract of the Triton module ``mmslak.ops.triton.dwconv`` (imported lazily, only when triton is
installed; it is the ``triton`` entry of :data:`DWCONV_BACKENDS`):

* ``triton_dwconv2d_forward(x, weight, bias) -> y``, equal to
  ``F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=C)`` for x (N, C, H, W) contiguous or
  channels_last, weight (C, 1, kh, kw) with kh, kw odd in 1..151, bias (C,) or None;
* ``triton_dwconv2d_backward(grad_out, x, weight, need_input, need_weight) -> (grad_x or None,
  grad_w or None)``;
* ``triton_decomposed_forward(x, w_long, w_wide, w_small, bias) -> y``, the sum of the 'same'
  depthwise convolutions with kernels (K, n), (n, K) and optionally (n, n) (``w_small`` may be None);
* ``triton_decomposed_backward(grad_out, x, w_long, w_wide, w_small, need_input, need_weight) ->
  (grad_x, g_long, g_wide, g_small)`` (``g_small`` None when ``w_small`` is None);
* ``triton_supports(x, *weights) -> (bool, reason)``.

The gradient of the bias is ``grad_out.sum((0, 2, 3))``, computed by :mod:`mmslak.ops.depthwise` for
every backend. The C++ (:mod:`mmslak.ops.cpu`) and PyTorch (:mod:`mmslak.ops.reference`) backends
provide the same five functions without the ``triton_`` prefix.
"""
import logging
import os
import warnings
from typing import Any, Callable, Dict, Mapping, NamedTuple, Sequence, Tuple

from mmengine.logging import print_log
from torch import Tensor

BACKEND_ENV_VAR = 'MMSLAK_DWCONV_BACKEND'
BACKEND_NAMES = ('cpp', 'triton', 'torch')
# Backends tried in order when none is forced; devices not listed use PyTorch.
DEVICE_PREFERENCE = {'cpu': ('cpp', 'torch'), 'cuda': ('triton', 'torch')}

_loaded: Dict[Tuple[str, str], Any] = {}
_announced = set()


def forced_backend():
    """Return the backend named by ``MMSLAK_DWCONV_BACKEND``, or None when it is unset or empty."""
    name = os.environ.get(BACKEND_ENV_VAR, '').strip().lower()
    if not name:
        return None
    if name not in BACKEND_NAMES:
        raise ValueError(f'{BACKEND_ENV_VAR}={name!r} is not a backend; allowed values are '
                         f'{", ".join(BACKEND_NAMES)} (or unset for automatic choice)')
    return name


def _load(op: str, name: str, loaders: Mapping[str, Callable[[], Any]]):
    """Return ``(implementation, None)`` or ``(None, reason)``, calling the loader at most once."""
    if name not in loaders:
        return None, f'{op} has no {name} backend'
    key = (op, name)
    if key not in _loaded:
        try:
            _loaded[key] = (loaders[name](), None)
        except ImportError as error:
            _loaded[key] = (None, str(error))
    return _loaded[key]


def _once(key, emit):
    if key not in _announced:
        _announced.add(key)
        emit()


def select_backend(op: str, loaders: Mapping[str, Callable[[], Any]], *tensors: Tensor):
    """Pick the backend that runs ``op`` on ``tensors`` (see the module docstring for the rules).

    Args:
        op (str): name of the op family, used in messages and log keys (e.g. ``'depthwise_conv2d'``).
        loaders (Mapping[str, Callable]): backend name (one of :data:`BACKEND_NAMES`) to loader.
        *tensors (Tensor): the inputs, first the one whose device decides; passed to ``supports``.

    Returns:
        tuple: ``(name, implementation)``.
    """
    device = tensors[0].device.type
    forced = forced_backend()
    if forced is not None:
        impl, reason = _load(op, forced, loaders)
        if impl is None:
            raise RuntimeError(f'{BACKEND_ENV_VAR}={forced} but the {forced} backend of {op} is '
                               f'unavailable: {reason}')
        ok, reason = impl.supports(*tensors)
        if not ok:
            raise RuntimeError(f'{BACKEND_ENV_VAR}={forced} but the {forced} backend of {op} refuses '
                               f'this input: {reason}')
        _once((op, device, forced, 'forced'), lambda: print_log(
            f'mmslak: {op} on {device} tensors uses the {forced} backend (forced by '
            f'{BACKEND_ENV_VAR})', logger='current', level=logging.INFO))
        return forced, impl
    refusals = []
    for name in DEVICE_PREFERENCE.get(device, ('torch', )):
        impl, reason = _load(op, name, loaders)
        if impl is not None:
            ok, reason = impl.supports(*tensors)
            if ok:
                break
        refusals.append((name, reason))
    else:
        raise RuntimeError(f'no backend of {op} takes this input: {refusals}')
    for refused, reason in refusals:
        message = (f'mmslak: {op} on {device} tensors falls back from the {refused} backend to '
                   f'{name}: {reason}')
        _once((op, device, refused, reason), lambda: warnings.warn(message, RuntimeWarning, 3))
    _once((op, device, name), lambda: print_log(
        f'mmslak: {op} on {device} tensors uses the {name} backend', logger='current',
        level=logging.INFO))
    return name, impl


class DwconvBackend(NamedTuple):
    """The functions a backend of the depthwise family provides (see the module docstring)."""
    supports: Callable
    forward: Callable
    backward: Callable
    decomposed_forward: Callable
    decomposed_backward: Callable


def _from_module(module, prefix=''):
    return DwconvBackend(*(getattr(module, prefix + name) for name in (
        'supports', 'dwconv2d_forward', 'dwconv2d_backward', 'decomposed_forward',
        'decomposed_backward')))


def _load_cpp():
    from . import cpu
    cpu.load_extension()
    return _from_module(cpu)


def _load_triton():
    try:
        from .triton import dwconv
    except ImportError as error:
        raise ImportError(f'mmslak.ops.triton.dwconv cannot be imported ({error})') from error
    return _from_module(dwconv, 'triton_')


def _load_torch():
    from . import reference
    return _from_module(reference)


DWCONV_BACKENDS: Mapping[str, Callable[[], DwconvBackend]] = {
    'cpp': _load_cpp,
    'triton': _load_triton,
    'torch': _load_torch,
}


def select_dwconv_backend(*tensors: Tensor) -> Tuple[str, DwconvBackend]:
    """:func:`select_backend` for the depthwise family; ``tensors`` are ``(x, *weights)``."""
    return select_backend('depthwise_conv2d', DWCONV_BACKENDS, *tensors)


__all__ = ['BACKEND_ENV_VAR', 'BACKEND_NAMES', 'DEVICE_PREFERENCE', 'DWCONV_BACKENDS', 'DwconvBackend',
           'forced_backend', 'select_backend', 'select_dwconv_backend']
