"""mmslak: SLaK and PeLK large-kernel ConvNets for the OpenMMLab 2.x stack.

Importing mmslak registers every model, hook and optimizer constructor for mmdet, mmseg and mmpretrain
(see :mod:`mmslak.registry`) and installs safe checkpoint loading for torch >= 2.6
(see :mod:`mmslak.utils.safe_checkpoint`). Where mmengine is not installed (a plain PyTorch project, or a
GPU machine with only torch and triton), only the convolution ops :mod:`mmslak.ops` are imported: they
need torch alone.
"""
__version__ = '0.1.0'

try:
    import mmengine  # noqa: F401
except ImportError:
    mmengine = None

if mmengine is not None:
    from .utils.safe_checkpoint import install_safe_checkpoint_loading

    install_safe_checkpoint_loading()

    from . import engine, models  # noqa: E402,F401

from . import ops  # noqa: E402,F401
