"""The backend dispatcher of mmslak.ops: forced backends, fallbacks and their messages."""
import warnings

import pytest
import torch

from mmslak.ops import depthwise_conv2d
from mmslak.ops import dispatch
from mmslak.ops.dispatch import BACKEND_ENV_VAR, select_backend


class _Backend:

    def __init__(self, accepts=True, reason=''):
        self.accepts, self.reason = accepts, reason

    def supports(self, *tensors):
        return self.accepts, self.reason


def _unavailable():
    raise ImportError('not built in this test')


@pytest.fixture(autouse=True)
def _fresh_dispatcher(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    monkeypatch.setattr(dispatch, '_loaded', {})
    monkeypatch.setattr(dispatch, '_announced', set())


def test_cpu_prefers_cpp_then_torch():
    cpp, torch_backend = _Backend(), _Backend()
    loaders = {'cpp': lambda: cpp, 'torch': lambda: torch_backend}
    assert select_backend('toy', loaders, torch.zeros(1)) == ('cpp', cpp)


def test_fallback_warns_once_with_the_reason():
    loaders = {'cpp': lambda: _Backend(False, 'the C++ kernels take float32 and float64'),
               'torch': lambda: _Backend()}
    with pytest.warns(RuntimeWarning, match='falls back from the cpp backend to torch: the C'):
        name, _ = select_backend('toy', loaders, torch.zeros(1))
    assert name == 'torch'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert select_backend('toy', loaders, torch.zeros(1))[0] == 'torch'


def test_unavailable_backend_falls_back_with_import_reason():
    loaders = {'cpp': _unavailable, 'torch': lambda: _Backend()}
    with pytest.warns(RuntimeWarning, match='not built in this test'):
        assert select_backend('toy', loaders, torch.zeros(1))[0] == 'torch'


def test_forced_backend_is_used_even_if_not_preferred(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, 'torch')
    loaders = {'cpp': lambda: _Backend(), 'torch': lambda: _Backend()}
    assert select_backend('toy', loaders, torch.zeros(1))[0] == 'torch'


def test_forced_backend_never_falls_back(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, 'cpp')
    refusing = {'cpp': lambda: _Backend(False, 'no bfloat16 here'), 'torch': lambda: _Backend()}
    with pytest.raises(RuntimeError, match='refuses this input: no bfloat16 here'):
        select_backend('toy', refusing, torch.zeros(1))
    monkeypatch.setenv(BACKEND_ENV_VAR, 'triton')
    with pytest.raises(RuntimeError, match='has no triton backend'):
        select_backend('toy', refusing, torch.zeros(1))
    missing = {'triton': _unavailable, 'torch': lambda: _Backend()}
    with pytest.raises(RuntimeError, match='unavailable: not built in this test'):
        select_backend('toy2', missing, torch.zeros(1))


def test_unknown_backend_name_is_a_value_error(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, 'cuda')
    with pytest.raises(ValueError, match='allowed values are cpp, triton, torch'):
        select_backend('toy', {'torch': lambda: _Backend()}, torch.zeros(1))


def test_bfloat16_on_cpu_runs_through_torch_with_a_warning():
    x = torch.randn(1, 2, 6, 6, dtype=torch.bfloat16)
    weight = torch.randn(2, 1, 3, 3, dtype=torch.bfloat16)
    try:
        dispatch.DWCONV_BACKENDS['cpp']()
    except ImportError as error:
        pytest.skip(f'cpp backend unavailable: {error}')
    with pytest.warns(RuntimeWarning, match='float32 and float64, got torch.bfloat16'):
        out = depthwise_conv2d(x, weight)
    ref = torch.nn.functional.conv2d(x, weight, padding=1, groups=2)
    torch.testing.assert_close(out, ref)


def test_forcing_cpp_on_bfloat16_raises(monkeypatch):
    try:
        dispatch.DWCONV_BACKENDS['cpp']()
    except ImportError as error:
        pytest.skip(f'cpp backend unavailable: {error}')
    monkeypatch.setenv(BACKEND_ENV_VAR, 'cpp')
    x = torch.randn(1, 2, 6, 6, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match='got torch.bfloat16'):
        depthwise_conv2d(x, torch.randn(2, 1, 3, 3, dtype=torch.bfloat16))


def test_missing_extension_falls_back_to_torch_with_reason(monkeypatch):
    # What a build with MMSLAK_NO_EXT=1 (or a broken extension) sees: results stay right, and the
    # warning says why the C++ kernels are not used.
    monkeypatch.setitem(dispatch.DWCONV_BACKENDS, 'cpp', _unavailable)
    x, weight = torch.randn(1, 3, 7, 6), torch.randn(3, 1, 5, 3)
    with pytest.warns(RuntimeWarning, match='from the cpp backend to torch: not built in this test'):
        out = depthwise_conv2d(x, weight)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, weight, padding=(2, 1), groups=3))
