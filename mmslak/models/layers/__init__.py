"""Building blocks of the backbones: norms, the decomposed SLaK conv, the peripheral conv."""
from .peripheral import (PeripheralConv2d, PeripheralPositionalEmbedding,  # noqa: F401
                         peripheral_conv_channels, peripheral_grid)
from .decomposed_conv import (DecomposedLargeKernelConv, DepthwiseConvBN,  # noqa: F401
                              fold_batch_norm, pad_kernel)
from .norm import LayerNorm2d  # noqa: F401
