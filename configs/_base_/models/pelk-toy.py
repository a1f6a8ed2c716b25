# The toy PeLK: large-kernel-convnext_toy.py with PeLK's kernels. The 21 and 17 kernels of the first two
# stages are peripheral (shared cells outside a 5x5 centre); the smaller ones are dense (PeLK's
# dense_max_kernel=13).
_base_ = './large-kernel-convnext_toy.py'

backbone = dict(type='PeLK')
