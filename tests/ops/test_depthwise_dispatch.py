"""The backend policy of mmslak.ops (dispatch.py): forced backends, fallbacks, the measured choice.

The measured choice runs on CUDA; here a Dispatcher that measures on the CPU, with an injected timer,
tests its decision logic. Which backend ran is read from the dispatcher's recording (a spy), never
inferred from the absence of a warning.
"""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmslak.ops import decomposed_depthwise_conv2d, depthwise_conv2d, dispatch
from mmslak.ops.depthwise import DWCONV_BACKENDS
from mmslak.ops.dispatch import BACKEND_ENV_VAR, Dispatcher, select_backend, signature, size_bucket


class _Backend:
    """A fake backend: ``supports`` answers as told, ``run`` counts its calls or raises ``error``."""

    def __init__(self, accepts=True, reason='', result=None, error=None):
        self.accepts, self.reason, self.result, self.error = accepts, reason, result, error
        self.calls = 0

    def supports(self, *tensors):
        return self.accepts, self.reason

    def run(self):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result


def _unavailable():
    raise ImportError('not built in this test')


def _run(dispatcher, loaders, *tensors, call_name='forward'):
    return dispatcher.run('toy', loaders, call_name, lambda backend: backend.run(), *tensors)


class _ScriptedTimer:
    """A timer that runs the timed function once and reports the seconds scripted per backend result."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.timed = []

    def __call__(self, fn, device):
        result = fn()
        self.timed.append(result)
        return self.seconds[result]


def _measuring(seconds):
    timer = _ScriptedTimer(seconds)
    return Dispatcher(preference={'cpu': ('triton', 'torch')}, measured_devices=('cpu', ),
                      timer=timer), timer


# ----------------------------------------------------------------------------- preference and forcing


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


def test_forced_backend_failure_propagates(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, 'triton')
    dispatcher, _ = _measuring({})
    failing = {'triton': lambda: _Backend(error=RuntimeError('ptxas died')), 'torch': lambda: _Backend()}
    with pytest.raises(RuntimeError, match='ptxas died'):
        _run(dispatcher, failing, torch.zeros(1, 1, 4, 4))


def test_unknown_backend_name_is_a_value_error(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, 'cuda')
    with pytest.raises(ValueError, match='allowed values are cpp, triton, torch'):
        select_backend('toy', {'torch': lambda: _Backend()}, torch.zeros(1))


# ----------------------------------------------------------------------------- measured choice


def test_measured_choice_keeps_the_faster_backend_per_signature():
    dispatcher, timer = _measuring({'triton': 2e-3, 'torch': 1e-3})
    triton, torch_backend = _Backend(result='triton'), _Backend(result='torch')
    loaders = {'triton': lambda: triton, 'torch': lambda: torch_backend}
    x = torch.zeros(2, 3, 20, 30)
    with dispatcher.recording() as choices:
        assert _run(dispatcher, loaders, x) == 'torch'
        assert _run(dispatcher, loaders, x) == 'torch'
        # Same bucket (H 17..32, W 17..32): no new measurement.
        assert _run(dispatcher, loaders, torch.zeros(2, 3, 31, 17)) == 'torch'
    assert timer.timed == ['triton', 'torch']
    assert [choice.backend for choice in choices] == ['torch'] * 3
    assert {choice.how for choice in choices} == {'measured'}
    assert triton.calls == 1  # only when it was timed


def test_measured_choice_times_each_new_signature():
    dispatcher, timer = _measuring({'triton': 1e-3, 'torch': 2e-3})
    loaders = {'triton': lambda: _Backend(result='triton'), 'torch': lambda: _Backend(result='torch')}
    x = torch.zeros(2, 3, 20, 30)
    assert _run(dispatcher, loaders, x) == 'triton'
    assert _run(dispatcher, loaders, x, call_name='backward') == 'triton'  # another call
    assert _run(dispatcher, loaders, x.to(torch.float64)) == 'triton'  # another dtype
    assert _run(dispatcher, loaders, x.contiguous(memory_format=torch.channels_last)) == 'triton'
    assert _run(dispatcher, loaders, torch.zeros(2, 3, 40, 30)) == 'triton'  # another H bucket
    assert _run(dispatcher, loaders, x, torch.zeros(3, 1, 5, 5)) == 'triton'  # another kernel
    assert len(timer.timed) == 2 * 6


def test_signature_buckets_sizes_to_powers_of_two():
    assert [size_bucket(n) for n in (0, 1, 2, 3, 5, 64, 65, 800)] == [0, 1, 2, 4, 8, 64, 128, 1024]
    weight = torch.zeros(3, 1, 51, 5)
    assert signature([torch.zeros(4, 3, 100, 120), weight]) == signature([torch.zeros(3, 3, 128, 65),
                                                                          weight])
    assert signature([torch.zeros(4, 3, 100, 120), weight]) != signature([torch.zeros(4, 3, 100, 129),
                                                                          weight])


def test_failing_backend_falls_back_to_torch_with_a_one_time_warning_quoting_the_error():
    dispatcher, timer = _measuring({'torch': 1e-3})
    triton = _Backend(error=RuntimeError('PTX .version 9.9 does not support .target sm_200'))
    loaders = {'triton': lambda: triton, 'torch': lambda: _Backend(result='torch')}
    x = torch.zeros(1, 2, 8, 8)
    with pytest.warns(RuntimeWarning, match=r'triton backend of toy \(forward\) failed.*sm_200'):
        assert _run(dispatcher, loaders, x) == 'torch'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert _run(dispatcher, loaders, x) == 'torch'
        assert _run(dispatcher, loaders, torch.zeros(1, 2, 64, 64)) == 'torch'  # new signature
    assert triton.calls == 2  # timed once per signature, never run again for it


def test_failure_after_the_decision_falls_back_too():
    # During CUDA graph capture nothing is timed; a preferred backend that fails then still falls back.
    dispatcher = Dispatcher(preference={'cpu': ('triton', 'torch')}, measured_devices=('cpu', ),
                            timer=lambda fn, device: 1.0)
    triton = _Backend(result='triton')
    loaders = {'triton': lambda: triton, 'torch': lambda: _Backend(result='torch')}
    x = torch.zeros(1, 2, 8, 8)
    assert _run(dispatcher, loaders, x) == 'triton'  # equal times: the preferred backend wins
    triton.error = RuntimeError('launch failed')
    with dispatcher.recording() as choices:
        with pytest.warns(RuntimeWarning, match='launch failed'):
            assert _run(dispatcher, loaders, x) == 'torch'
        assert _run(dispatcher, loaders, x) == 'torch'
    assert [choice.backend for choice in choices] == ['torch', 'torch']  # what ran, not what failed


def test_last_candidate_errors_propagate():
    dispatcher, _ = _measuring({})
    loaders = {'triton': lambda: _Backend(error=RuntimeError('a')),
               'torch': lambda: _Backend(error=ValueError('bad input'))}
    with pytest.raises(ValueError, match='bad input'), pytest.warns(RuntimeWarning, match='a'):
        _run(dispatcher, loaders, torch.zeros(1, 1, 2, 2))


def test_unmeasured_devices_run_the_first_candidate_without_timing():
    def timer(fn, device):
        raise AssertionError('nothing is timed on an unmeasured device')

    dispatcher = Dispatcher(preference={'cpu': ('cpp', 'torch')}, measured_devices=('cuda', ),
                            timer=timer)
    loaders = {'cpp': lambda: _Backend(result='cpp'), 'torch': lambda: _Backend(result='torch')}
    with dispatcher.recording() as choices:
        assert _run(dispatcher, loaders, torch.zeros(1, 1, 3, 3)) == 'cpp'
    assert choices == [dispatch.Choice('toy', 'forward', 'cpu', 'cpp', 'preferred')]


def test_default_timer_runs_the_function_and_returns_seconds():
    calls = []
    seconds = dispatch.event_timer(lambda: calls.append(1), torch.device('cpu'))
    assert len(calls) == 1 + dispatch.TIMED_RUNS and 0 <= seconds < 1


def test_require_ext_turns_a_missing_extension_into_a_failure(require_backend, monkeypatch):
    loaders = {'cpp': _unavailable, 'triton': _unavailable}
    monkeypatch.delenv('MMSLAK_REQUIRE_EXT', raising=False)
    with pytest.raises(pytest.skip.Exception, match='not built in this test'):
        require_backend(loaders, 'cpp')
    monkeypatch.setenv('MMSLAK_REQUIRE_EXT', '1')
    with pytest.raises(pytest.fail.Exception, match='MMSLAK_REQUIRE_EXT=1 but the C.. extension is unavailable'):
        require_backend(loaders, 'cpp')
    with pytest.raises(pytest.skip.Exception):  # triton stays optional
        require_backend(loaders, 'triton')


# ----------------------------------------------------------------------------- the real ops


def test_float16_on_cpu_runs_through_torch_with_a_warning(require_backend, ran_backends):
    require_backend(DWCONV_BACKENDS, 'cpp')
    x = torch.randn(1, 2, 6, 6, dtype=torch.float16)
    weight = torch.randn(2, 1, 3, 3, dtype=torch.float16)
    with pytest.warns(RuntimeWarning, match='the C.. kernels take .*, got torch.float16'):
        out = depthwise_conv2d(x, weight)
    assert [choice.backend for choice in ran_backends] == ['torch']
    torch.testing.assert_close(out, F.conv2d(x, weight, padding=1, groups=2))


def test_float32_on_cpu_runs_the_cpp_kernels(require_backend, ran_backends):
    require_backend(DWCONV_BACKENDS, 'cpp')
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    w_long, w_wide = torch.randn(2, 1, 5, 3), torch.randn(2, 1, 3, 5)
    decomposed_depthwise_conv2d(x, w_long, w_wide).sum().backward()
    assert [(choice.call, choice.backend) for choice in ran_backends] == [
        ('decomposed_forward', 'cpp'), ('decomposed_backward(True, False)', 'cpp')]


def test_forcing_cpp_on_float16_raises(require_backend, monkeypatch):
    require_backend(DWCONV_BACKENDS, 'cpp')
    monkeypatch.setenv(BACKEND_ENV_VAR, 'cpp')
    x = torch.randn(1, 2, 6, 6, dtype=torch.float16)
    with pytest.raises(RuntimeError, match='got torch.float16'):
        depthwise_conv2d(x, torch.randn(2, 1, 3, 3, dtype=torch.float16))


def test_missing_extension_falls_back_to_torch_with_reason(monkeypatch, ran_backends):
    # What a build with MMSLAK_NO_EXT=1 (or a broken extension) sees: results stay right, and the
    # warning says why the C++ kernels are not used.
    monkeypatch.setitem(DWCONV_BACKENDS, 'cpp', _unavailable)
    x, weight = torch.randn(1, 3, 7, 6), torch.randn(3, 1, 5, 3)
    with pytest.warns(RuntimeWarning, match='from the cpp backend to torch: not built in this test'):
        out = depthwise_conv2d(x, weight)
    assert [choice.backend for choice in ran_backends] == ['torch']
    torch.testing.assert_close(out, F.conv2d(x, weight, padding=(2, 1), groups=3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_ops_take_the_measured_choice(ran_backends):
    # With CUDA events timing Triton against PyTorch (on a GPU, run with TRITON_INTERPRET=0).
    x = torch.randn(2, 8, 32, 32, device='cuda', requires_grad=True)
    w_long, w_wide = torch.randn(8, 1, 31, 5, device='cuda'), torch.randn(8, 1, 5, 31, device='cuda')
    out = decomposed_depthwise_conv2d(x, w_long, w_wide)
    out.sum().backward()
    assert [choice.how for choice in ran_backends] == ['measured', 'measured']
    assert {choice.backend for choice in ran_backends} <= {'triton', 'torch'}
    expected = (F.conv2d(x.detach().double(), w_long.double(), padding=(15, 2), groups=8)
                + F.conv2d(x.detach().double(), w_wide.double(), padding=(2, 15), groups=8))
    torch.testing.assert_close(out.detach().double(), expected, rtol=1e-4, atol=1e-4)


# Blocks every OpenMMLab package, then runs the ops: what a PyTorch-only project (or a GPU machine with
# only torch and triton) sees.
_TORCH_ONLY = '''
import importlib.abc
import sys


class BlockOpenMMLab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain'):
            raise ModuleNotFoundError(f'{name} is blocked in this test', name=name)
        return None


sys.meta_path.insert(0, BlockOpenMMLab())
import torch
import torch.nn.functional as F
from mmslak.ops import depthwise_conv2d, expand_peripheral_kernel, peripheral_depthwise_conv2d

x = torch.randn(1, 3, 9, 9, requires_grad=True)
weight = torch.randn(3, 1, 7, 3)
depthwise_conv2d(x, weight).sum().backward()
expected = F.conv_transpose2d(torch.ones(1, 3, 9, 9), weight, padding=(3, 1), groups=3)
assert torch.allclose(x.grad, expected, atol=1e-5)
grid = [2, 1, 2]
small = torch.randn(3, 1, 3, 3)
out = peripheral_depthwise_conv2d(x, small, grid)
assert torch.allclose(out, F.conv2d(x, expand_peripheral_kernel(small, grid), padding=2, groups=3),
                      atol=1e-5)
print('ran with torch alone')
'''


def test_ops_import_and_run_with_torch_alone():
    result = subprocess.run([sys.executable, '-W', 'ignore', '-c', _TORCH_ONLY], capture_output=True,
                            text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'ran with torch alone'
