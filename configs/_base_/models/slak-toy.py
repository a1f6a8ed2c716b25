# The toy SLaK: large-kernel-convnext_toy.py with SLaK's decomposed kernels.
_base_ = './large-kernel-convnext_toy.py'

backbone = dict(type='SLaK')
