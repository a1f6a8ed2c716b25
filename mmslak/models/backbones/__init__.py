"""Backbones: SLaK and PeLK."""
from .large_kernel_convnext import LargeKernelBlock, LargeKernelConvNeXt, LargeKernelStage  # noqa: F401
from .slak import SLaK  # noqa: F401
from .pelk import PeLK  # noqa: F401
