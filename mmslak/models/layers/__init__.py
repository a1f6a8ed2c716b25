"""Building blocks of the backbones: norms, the decomposed SLaK conv, the peripheral conv."""
from .peripheral import PeripheralConv2d, peripheral_grid  # noqa: F401
