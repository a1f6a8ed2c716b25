"""Large-kernel depthwise convolutions: the only convolution entry points the models use."""
from .depthwise import (LargeKernelDepthwiseConv2d, decomposed_depthwise_conv2d,
                        depthwise_conv2d)

__all__ = ['depthwise_conv2d', 'decomposed_depthwise_conv2d', 'LargeKernelDepthwiseConv2d']
