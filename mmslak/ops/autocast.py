"""How the custom ops meet ``torch.autocast``.

Autocast does not rewrite custom ops, so under ``torch.autocast`` an op receives activations in the autocast
dtype (the output of an autocast Linear or conv) or in float32 (a residual stream) next to float32 parameters.
The ops cast every floating input to one compute dtype first, as autocast does for its own convolutions:

* on the CPU, bfloat16 under ``autocast(dtype=torch.bfloat16)``: the C++ kernels take it (float32
  accumulation, VDPBF16PS dot products where the CPU has them, weight gradients accumulated in float32);
  float32 under float16 autocast, which the C++ kernels do not take;
* on other devices the autocast dtype (float16 or bfloat16), which the Triton kernels take natively.

float64 inputs are left alone, as autocast itself does.
"""
import torch

_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def compute_dtype(device_type: str) -> torch.dtype:
    """The dtype the ops compute in under autocast on ``device_type`` (autocast must be enabled there)."""
    dtype = torch.get_autocast_dtype(device_type)
    if device_type != 'cpu':
        return dtype
    return dtype if dtype == torch.bfloat16 else torch.float32


def autocast_inputs(*tensors):
    """Return ``tensors`` cast to the dtype the ops compute in under autocast (None entries stay None)."""
    first = tensors[0]
    device = first.device.type
    # Devices without autocast (the meta device of a shape-only forward) have nothing to cast.
    if (not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device)
            or first.dtype not in _AUTOCAST_DTYPES):
        return tensors
    dtype = compute_dtype(device)
    return tuple(t.to(dtype) if t is not None and t.dtype in _AUTOCAST_DTYPES else t for t in tensors)
