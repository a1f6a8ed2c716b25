"""Backend fixtures of the op tests: forced backends, the dispatcher spy, devices, required extension.

``MMSLAK_REQUIRE_EXT=1`` (CI sets it) turns a missing compiled C++ extension from a skip into a failure of
every test that needs it, so that a broken build cannot pass as "all skipped".
"""
import importlib.util
import os

import pytest
import torch

from mmslak.ops import dispatch
from mmslak.ops.depthwise import DWCONV_BACKENDS
from mmslak.ops.peripheral import PERIPHERAL_BACKENDS

REQUIRE_EXT_ENV_VAR = 'MMSLAK_REQUIRE_EXT'


def _interpret_bf16_dots_as_floats():
    """Make the Triton interpreter's ``tl.dot`` multiply bf16 operands as numbers.

    triton 3.8's interpreter stores bf16 as raw uint16 and its ``create_dot`` multiplies those bits
    (``tl.dot`` of two bf16 ones gives ~1e10). On a GPU a bf16 MMA multiplies the values exactly into
    fp32, which is what converting the operands to float32 first reproduces.
    """
    import numpy as np
    from triton.runtime import interpreter
    builder = interpreter.InterpreterBuilder
    original = builder.create_dot
    if getattr(original, 'converts_bf16', False):
        return

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        def as_float(operand):
            if operand.dtype != interpreter.tl.bfloat16:
                return operand
            bits = operand.data.astype(np.uint32) << 16
            return interpreter.TensorHandle(bits.view(np.float32), interpreter.tl.float32)
        return original(self, as_float(a), as_float(b), d, input_precision, max_num_imprecise_acc)

    create_dot.converts_bf16 = True
    builder.create_dot = create_dot


if os.environ.get('TRITON_INTERPRET') == '1' and importlib.util.find_spec('triton') is not None:
    _interpret_bf16_dots_as_floats()


def extension_required() -> bool:
    """Whether ``MMSLAK_REQUIRE_EXT`` asks for a missing C++ extension to fail the tests."""
    return os.environ.get(REQUIRE_EXT_ENV_VAR, '').strip().lower() in ('1', 'true', 'yes', 'on')


def load_or_skip(loaders, name):
    """Load backend ``name`` from a family's table; skip the test if it is unavailable, except that a
    missing ``cpp`` backend fails it under ``MMSLAK_REQUIRE_EXT=1``."""
    try:
        return loaders[name]()
    except ImportError as error:
        if name == 'cpp' and extension_required():
            pytest.fail(f'{REQUIRE_EXT_ENV_VAR}=1 but the C++ extension is unavailable: {error}')
        pytest.skip(f'{name} backend unavailable: {error}')


@pytest.fixture
def require_backend():
    """``require_backend(loaders, name)``: :func:`load_or_skip` for tests that take it as a fixture."""
    return load_or_skip


@pytest.fixture(autouse=True)
def fresh_dispatcher(monkeypatch):
    """A new process-wide dispatcher per test: no loaded backend, measured choice or one-time message
    leaks from one test into another. Yields it."""
    fresh = dispatch.Dispatcher()
    monkeypatch.setattr(dispatch, 'DISPATCHER', fresh)
    monkeypatch.delenv(dispatch.BACKEND_ENV_VAR, raising=False)
    yield fresh


@pytest.fixture
def ran_backends(fresh_dispatcher):
    """The list of :class:`mmslak.ops.dispatch.Choice` of every op run during the test (the spy)."""
    with fresh_dispatcher.recording() as choices:
        yield choices


def _force(monkeypatch, loaders, name):
    load_or_skip(loaders, name)
    monkeypatch.setenv(dispatch.BACKEND_ENV_VAR, name)
    return name


@pytest.fixture(params=['cpp', 'torch'])
def dwconv_backend(request, monkeypatch):
    """Each CPU backend of the depthwise family, forced by MMSLAK_DWCONV_BACKEND (a forced backend never
    falls back, so the test really runs it)."""
    return _force(monkeypatch, DWCONV_BACKENDS, request.param)


@pytest.fixture(params=['cpp', 'torch'])
def peripheral_backend(request, monkeypatch):
    """Each CPU backend of the peripheral family, forced like :func:`dwconv_backend`."""
    return _force(monkeypatch, PERIPHERAL_BACKENDS, request.param)


@pytest.fixture(params=['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device'))])
def device(request):
    """Every device the ops run on here: the CPU, and CUDA when a GPU is present (skipped otherwise).

    On the CPU the Triton kernels run under the interpreter (tests/conftest.py sets TRITON_INTERPRET=1).
    """
    return torch.device(request.param)


@pytest.fixture
def triton_device(device):
    """``device`` where the Triton kernels run on it (the interpreter on the CPU); skipped with the
    reason where they cannot (no triton; CPU tensors without TRITON_INTERPRET=1)."""
    from mmslak.ops.triton.dwconv import triton_supports
    ok, reason = triton_supports(torch.zeros(1, 1, 1, 1, device=device))
    if not ok:
        pytest.skip(f'Triton unavailable on {device}: {reason}')
    return device


@pytest.fixture
def triton_backend(monkeypatch, triton_device):
    """The Triton backend forced for both op families, on ``triton_device``."""
    monkeypatch.setenv(dispatch.BACKEND_ENV_VAR, 'triton')
    return 'triton'
