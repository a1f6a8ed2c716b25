"""How the custom ops meet ``torch.autocast``.

Autocast does not rewrite custom ops, so under ``torch.autocast`` an op receives an activation in the autocast
dtype (the output of an autocast Linear or conv) next to float32 parameters. The ops cast every floating input
to one dtype first:

* on the CPU to float32: the C++ kernels take float32 and float64 only, and they are faster in float32 than
  PyTorch's bfloat16 depthwise convolution, so a bfloat16 kernel would be both slower and less precise;
* on other devices to the autocast dtype (float16 or bfloat16), which the Triton kernels take natively.

float64 inputs are left alone, as autocast itself does.
"""
import torch

_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def autocast_inputs(*tensors):
    """Return ``tensors`` cast to the dtype the ops compute in under autocast (None entries stay None)."""
    first = tensors[0]
    device = first.device.type
    if not torch.is_autocast_enabled(device) or first.dtype not in _AUTOCAST_DTYPES:
        return tensors
    dtype = torch.float32 if device == 'cpu' else torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) if t is not None and t.dtype in _AUTOCAST_DTYPES else t for t in tensors)
