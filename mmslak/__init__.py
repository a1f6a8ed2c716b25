"""mmslak: SLaK and PeLK large-kernel ConvNets for the OpenMMLab 2.x stack.

Importing mmslak registers every model, hook and optimizer constructor for mmdet, mmseg and mmpretrain
(see :mod:`mmslak.registry`) and installs safe checkpoint loading for torch >= 2.6
(see :mod:`mmslak.utils.safe_checkpoint`).
"""
__version__ = '0.1.0'

from .utils.safe_checkpoint import install_safe_checkpoint_loading  # noqa: E402

install_safe_checkpoint_loading()

from . import engine, models, ops  # noqa: E402,F401
