"""Backend choice for mmslak's convolution ops: the policy, and nothing else.

An op family declares its backends beside its ops as a table ``{name: loader}``
(:data:`mmslak.ops.depthwise.DWCONV_BACKENDS`, :data:`mmslak.ops.peripheral.PERIPHERAL_BACKENDS`). A
loader is a zero-argument callable returning the backend's implementation object, or raising
``ImportError`` whose message says why the backend is unavailable; it is called at most once. The
implementation object has ``supports(*tensors) -> (bool, reason)``; the family decides what else it
holds. Every custom op runs its backend through :func:`run_op`, under these rules:

1. ``MMSLAK_DWCONV_BACKEND=cpp|triton|torch`` (read at every call) forces a backend, for tests and for
   users who hit a bug. A forced backend that is not installed, that refuses the input or that fails
   raises: a forced choice never falls back, so a test that forces a backend really tests it. With
   ``TRITON_INTERPRET=1``, forcing ``triton`` runs CPU tensors through the Triton kernels in the
   interpreter.
2. Otherwise the candidates are the device's backends (:data:`DEVICE_PREFERENCE`: CPU tensors ``cpp``
   then ``torch``, CUDA tensors ``triton`` then ``torch``, other devices ``torch``) that load and accept
   the input. A refusal is reported once by a ``RuntimeWarning`` that says why (for example "the C++
   kernels take float32 and float64, got torch.bfloat16").
3. On the CPU the first candidate runs. On CUDA (:data:`MEASURED_DEVICES`) the choice is measured, like
   ``torch.backends.cudnn.benchmark``: the first call of an op for a signature (dtype, memory format,
   channels, kernel shapes, and N, H, W rounded up to powers of two, so that multi-scale training times a
   bounded number of shapes) times every candidate with the dispatcher's timer (CUDA events) and the
   faster one serves that signature for the rest of the process. A candidate that raises (a Triton
   compile or launch failure) is dropped for the signature with a one-time ``RuntimeWarning`` quoting
   the error, and the next one runs; the last candidate's errors propagate. During CUDA graph capture
   nothing is timed and the first candidate runs.
4. Choices are logged once per op, device and backend on the ``mmslak.ops`` logger (level INFO), and
   :func:`recording` lists every choice made while it is active (the spy the tests use).
"""
import contextlib
import logging
import os
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

BACKEND_ENV_VAR = 'MMSLAK_DWCONV_BACKEND'
BACKEND_NAMES = ('cpp', 'triton', 'torch')
# Backends tried in order when none is forced; devices not listed use PyTorch.
DEVICE_PREFERENCE = {'cpu': ('cpp', 'torch'), 'cuda': ('triton', 'torch')}
# Devices on which the first call of a signature times the candidates and keeps the fastest.
MEASURED_DEVICES = ('cuda', )
# Timed runs per candidate after one warm-up run (which compiles Triton kernels).
TIMED_RUNS = 3

logger = logging.getLogger('mmslak.ops')

Loaders = Mapping[str, Callable[[], Any]]
# timer(fn, device) -> seconds one call of fn takes on device (fn is run at least once).
Timer = Callable[[Callable[[], Any], torch.device], float]


class Choice(NamedTuple):
    """One backend choice: which backend ran ``call`` of ``op`` (successfully) on which device, and how
    it was chosen.

    ``how`` is ``'forced'``, ``'preferred'`` (first candidate) or ``'measured'``.
    """
    op: str
    call: str
    device: str
    backend: str
    how: str


def forced_backend() -> Optional[str]:
    """Return the backend named by ``MMSLAK_DWCONV_BACKEND``, or None when it is unset or empty."""
    name = os.environ.get(BACKEND_ENV_VAR, '').strip().lower()
    if not name:
        return None
    if name not in BACKEND_NAMES:
        raise ValueError(f'{BACKEND_ENV_VAR}={name!r} is not a backend; allowed values are '
                         f'{", ".join(BACKEND_NAMES)} (or unset for automatic choice)')
    return name


def event_timer(fn: Callable[[], Any], device: torch.device, runs: int = TIMED_RUNS) -> float:
    """Median seconds of ``fn`` over ``runs`` runs after one warm-up run; CUDA events on a GPU (on the
    current stream), the wall clock elsewhere."""
    fn()
    times = []
    for _ in range(runs):
        if device.type == 'cuda':
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return sorted(times)[len(times) // 2]


def size_bucket(size: int) -> int:
    """``size`` rounded up to a power of two (0 stays 0): the granularity of measured signatures."""
    return 0 if size <= 0 else 1 << (size - 1).bit_length()


def signature(tensors: Sequence[Tensor]) -> Tuple:
    """The measured-choice key of a call: the first tensor's dtype, memory format, C and bucketed
    N, H, W, and the exact shapes of the others (kernels)."""
    x = tensors[0]
    n, c, h, w = x.shape
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return (x.device.type, x.device.index, x.dtype, channels_last, c, size_bucket(n), size_bucket(h),
            size_bucket(w), tuple(tuple(t.shape) for t in tensors[1:] if t is not None))


def _capturing(device: torch.device) -> bool:
    return device.type == 'cuda' and torch.cuda.is_current_stream_capturing()


class Dispatcher:
    """The backend policy and its per-process state (loaded backends, measured choices, messages).

    Args:
        preference (Mapping[str, Sequence[str]]): device type to backend names in preference order.
        measured_devices (Sequence[str]): device types on which the choice is measured.
        timer (Timer): how a candidate is timed; :func:`event_timer` by default.
    """

    def __init__(self, preference: Mapping[str, Sequence[str]] = DEVICE_PREFERENCE,
                 measured_devices: Sequence[str] = MEASURED_DEVICES, timer: Timer = event_timer):
        self.preference = preference
        self.measured_devices = tuple(measured_devices)
        self.timer = timer
        self._loaded: Dict[Tuple[str, str], Tuple[Any, Optional[str]]] = {}
        self._announced = set()
        self._decisions: Dict[Tuple, str] = {}
        self._recorders: List[List[Choice]] = []

    def load(self, op: str, name: str, loaders: Loaders):
        """Return ``(implementation, None)`` or ``(None, reason)``, calling the loader at most once."""
        if name not in loaders:
            return None, f'{op} has no {name} backend'
        key = (op, name)
        if key not in self._loaded:
            try:
                self._loaded[key] = (loaders[name](), None)
            except ImportError as error:
                self._loaded[key] = (None, str(error))
        return self._loaded[key]

    def _once(self, key, emit: Callable[[], None]):
        if key not in self._announced:
            self._announced.add(key)
            emit()

    def _warn_once(self, key, message: str):
        self._once(key, lambda: warnings.warn(message, RuntimeWarning, 5))

    def _forced(self, op: str, name: str, loaders: Loaders, tensors: Sequence[Tensor]):
        impl, reason = self.load(op, name, loaders)
        if impl is None:
            raise RuntimeError(f'{BACKEND_ENV_VAR}={name} but the {name} backend of {op} is '
                               f'unavailable: {reason}')
        ok, reason = impl.supports(*tensors)
        if not ok:
            raise RuntimeError(f'{BACKEND_ENV_VAR}={name} but the {name} backend of {op} refuses '
                               f'this input: {reason}')
        return impl

    def candidates(self, op: str, loaders: Loaders, *tensors: Tensor) -> List[Tuple[str, Any]]:
        """The ``(name, implementation)`` pairs that may run ``op`` on ``tensors``, preferred first.

        Every preferred backend that is missing or refuses the input before the first one that takes
        it is reported by a one-time warning. Raises RuntimeError when no backend takes the input.
        """
        device = tensors[0].device.type
        accepted, refusals = [], []
        for name in self.preference.get(device, ('torch', )):
            impl, reason = self.load(op, name, loaders)
            if impl is not None:
                ok, reason = impl.supports(*tensors)
                if ok:
                    accepted.append((name, impl))
                    continue
            if not accepted:
                refusals.append((name, reason))
        if not accepted:
            raise RuntimeError(f'no backend of {op} takes this input: {refusals}')
        for refused, reason in refusals:
            self._warn_once((op, device, refused, reason),
                            f'mmslak: {op} on {device} tensors falls back from the {refused} backend '
                            f'to {accepted[0][0]}: {reason}')
        return accepted

    def select(self, op: str, loaders: Loaders, *tensors: Tensor) -> Tuple[str, Any]:
        """The backend that runs ``op`` on ``tensors`` when nothing is measured: the forced one, else
        the first candidate. Returns ``(name, implementation)``."""
        forced = forced_backend()
        if forced is not None:
            return forced, self._forced(op, forced, loaders, tensors)
        return self.candidates(op, loaders, *tensors)[0]

    def run(self, op: str, loaders: Loaders, call_name: str, call: Callable[[Any], Any],
            *tensors: Tensor):
        """Run ``call(implementation)`` with the backend the rules pick for ``tensors``; return its result.

        Args:
            op (str): name of the op family, used in messages and keys (e.g. ``'depthwise_conv2d'``).
            loaders (Mapping[str, Callable]): backend name (one of :data:`BACKEND_NAMES`) to loader.
            call_name (str): which call of the family this is (``'forward'``, ``'backward'``...); part
                of the measured-choice key, since forward and backward may prefer different backends.
            call (Callable): runs the call with an implementation object and returns its result.
            *tensors (Tensor): the inputs, first the one whose device decides; passed to ``supports``.
        """
        device = tensors[0].device
        forced = forced_backend()
        if forced is not None:
            result = call(self._forced(op, forced, loaders, tensors))
            self._chosen(Choice(op, call_name, device.type, forced, 'forced'))
            return result
        candidates = self.candidates(op, loaders, *tensors)
        if device.type not in self.measured_devices or len(candidates) == 1:
            name, impl = candidates[0]
            result = call(impl)
            self._chosen(Choice(op, call_name, device.type, name, 'preferred'))
            return result
        key = (op, call_name, signature(tensors))
        if key not in self._decisions and not _capturing(device):
            self._decisions[key] = self._measure(op, call_name, call, candidates, device)
        chosen = self._decisions.get(key, candidates[0][0])
        how = 'measured' if key in self._decisions else 'preferred'
        names = [name for name, _ in candidates]
        for name, impl in candidates[names.index(chosen):]:
            try:
                result = call(impl)
            except Exception as error:  # noqa: BLE001 -- any compile or launch failure falls back
                if name == names[-1]:
                    raise
                fallback = names[names.index(name) + 1]
                self._failed(op, call_name, name, fallback, error)
                self._decisions[key] = fallback
                continue
            self._chosen(Choice(op, call_name, device.type, name, how))
            return result

    def _measure(self, op: str, call_name: str, call: Callable[[Any], Any],
                 candidates: Sequence[Tuple[str, Any]], device: torch.device) -> str:
        """Time every candidate on this call and return the fastest one's name."""
        seconds = {}
        for index, (name, impl) in enumerate(candidates):
            try:
                seconds[name] = self.timer(lambda: call(impl), device)
            except Exception as error:  # noqa: BLE001 -- a failing candidate is not chosen
                if index == len(candidates) - 1 and not seconds:
                    raise
                self._failed(op, call_name, name, 'the other candidates', error)
        fastest = min(seconds, key=seconds.get)
        timings = ', '.join(f'{name} {1e3 * value:.3f} ms' for name, value in seconds.items())
        logger.info('mmslak: %s %s on %s: measured %s; using %s', op, call_name, device, timings,
                    fastest)
        return fastest

    def _failed(self, op: str, call_name: str, name: str, fallback: str, error: Exception):
        self._warn_once((op, name, 'failed', str(error)),
                        f'mmslak: the {name} backend of {op} ({call_name}) failed, so {fallback} '
                        f'runs this input: {type(error).__name__}: {error}')

    def _chosen(self, choice: Choice):
        for recorder in self._recorders:
            recorder.append(choice)
        self._once((choice.op, choice.device, choice.backend), lambda: logger.info(
            'mmslak: %s on %s tensors uses the %s backend (%s)', choice.op, choice.device,
            choice.backend, choice.how))

    @contextlib.contextmanager
    def recording(self):
        """Context manager yielding a list that receives a :class:`Choice` for every op run inside it."""
        choices: List[Choice] = []
        self._recorders.append(choices)
        try:
            yield choices
        finally:
            self._recorders.remove(choices)


DISPATCHER = Dispatcher()


def run_op(op: str, loaders: Loaders, call_name: str, call: Callable[[Any], Any], *tensors: Tensor):
    """:meth:`Dispatcher.run` of the process-wide dispatcher :data:`DISPATCHER`."""
    return DISPATCHER.run(op, loaders, call_name, call, *tensors)


def select_backend(op: str, loaders: Loaders, *tensors: Tensor) -> Tuple[str, Any]:
    """:meth:`Dispatcher.select` of the process-wide dispatcher :data:`DISPATCHER`."""
    return DISPATCHER.select(op, loaders, *tensors)


def recording():
    """:meth:`Dispatcher.recording` of the process-wide dispatcher :data:`DISPATCHER`."""
    return DISPATCHER.recording()


__all__ = ['BACKEND_ENV_VAR', 'BACKEND_NAMES', 'DEVICE_PREFERENCE', 'MEASURED_DEVICES', 'Choice',
           'DISPATCHER', 'Dispatcher', 'event_timer', 'forced_backend', 'recording', 'run_op',
           'select_backend', 'signature', 'size_bucket']
