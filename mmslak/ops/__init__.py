"""Large-kernel depthwise convolutions: the only convolution entry points the models use."""
from .depthwise import (LargeKernelDepthwiseConv2d, decomposed_depthwise_conv2d,
                        depthwise_conv2d)
from .peripheral import expand_peripheral_kernel, peripheral_depthwise_conv2d

__all__ = ['depthwise_conv2d', 'decomposed_depthwise_conv2d', 'LargeKernelDepthwiseConv2d',
           'peripheral_depthwise_conv2d', 'expand_peripheral_kernel']
