"""Building blocks of the backbones: norms, the decomposed SLaK conv, the peripheral conv."""
