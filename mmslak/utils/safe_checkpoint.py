"""Safe checkpoint loading for mmengine 0.10.7 under torch >= 2.6.

torch >= 2.6 loads checkpoints with ``weights_only=True`` by default, which refuses every class that is not a
tensor or a builtin container. mmengine 0.10.7 calls ``torch.load`` without arguments, and its checkpoints hold
its own ``HistoryBuffer`` and numpy arrays and scalars (in the message hub), so resuming fails. Instead of turning
safety off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), :func:`install_safe_checkpoint_loading` allow-lists exactly
the classes mmengine checkpoints contain, and replaces mmengine's local-file loader with one that names the
offending class when a file holds anything else.
"""
import importlib
import os.path as osp
import pickle
import re

import torch

from mmengine.logging import print_log


def mmengine_checkpoint_globals():
    """The classes and functions an mmengine checkpoint's pickle refers to, besides tensors and builtins."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    # numpy 2 pickles from numpy._core, numpy 1 from numpy.core; either may have written the file.
    multiarray_modules = []
    for name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            multiarray_modules.append(importlib.import_module(name))
        except ImportError:
            pass
    allowed = [HistoryBuffer, np.ndarray, np.dtype, (_history_buffer_statistic, 'builtins.getattr')]
    for module in multiarray_modules:
        allowed += [(module._reconstruct, f'{module.__name__}._reconstruct'),
                    (module.scalar, f'{module.__name__}.scalar')]
    # numpy >= 1.25 pickles a dtype through its class, e.g. numpy.dtypes.Float64DType.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [cls for cls in vars(dtypes).values() if isinstance(cls, type) and issubclass(cls, np.dtype)]
    return allowed


def _history_buffer_statistic(owner, name):
    """The only ``getattr`` an mmengine checkpoint needs: a HistoryBuffer pickles its statistics methods
    (``min``, ``max``, ``current``, ``mean`` and registered ones) as ``getattr(HistoryBuffer, name)``. A plain
    ``getattr`` on the allow-list would let a file reach any attribute of any allowed object."""
    from mmengine.logging.history_buffer import HistoryBuffer
    statistics = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if owner is HistoryBuffer and name in statistics:
        return getattr(owner, name)
    raise UnsafeCheckpointError(f'checkpoint asks for getattr({owner!r}, {name!r}), which is not allowed')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint refers to a class or function outside the allow-list."""


def safe_torch_load(filename, map_location=None, extra_globals=(), mmap=False):
    """``torch.load(weights_only=True)`` with mmengine's classes (and ``extra_globals``) allowed.

    ``mmap=True`` maps the file instead of reading its tensor data (zip-format checkpoints only).

    Raises:
        FileNotFoundError: ``filename`` does not exist.
        UnsafeCheckpointError: the file refers to a class that is not allowed; the message names it.
    """
    try:
        with torch.serialization.safe_globals(list(extra_globals)):
            return torch.load(filename, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # torch's message is long and suggests disabling safety; keep only the sentence naming the global.
        message = ' '.join(str(err).split())
        match = re.search(r'(Unsupported global: GLOBAL \S+|unsupported GLOBAL \S+ whose module \S+ is blocked'
                          r'|checkpoint asks for getattr\(.*?\), which is not allowed)', message)
        reason = match.group(1) if match else message
        raise UnsafeCheckpointError(
            f'Refusing to load checkpoint {filename}: it contains objects outside the allow-list of mmengine '
            f'checkpoint classes ({reason}). mmslak loads checkpoints with torch.load(weights_only=True); '
            'an official SLaK checkpoint must first be converted with tools/model_converters/slak2mmslak.py.'
        ) from None


def load_from_local(filename, map_location):
    """mmengine's local checkpoint loader, with the allow-list and a readable refusal."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    return safe_torch_load(filename, map_location)


_installed = False


def install_safe_checkpoint_loading():
    """Allow-list mmengine's checkpoint classes and route mmengine's local checkpoint loading through them.

    Idempotent. Does nothing to torch < 2.4, which has no allow-list (and loads everything).
    """
    global _installed
    if _installed or not hasattr(torch.serialization, 'add_safe_globals'):
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    _installed = True
    print_log('mmslak: checkpoints load with weights_only=True and an allow-list of mmengine classes',
              logger='current', level=10)
