# Small-kernel baseline of the toy UperNet-SLaK: the same network with ConvNeXt's 7x7 depthwise kernels in
# every stage instead of 21, 17, 13, 7 (one 7x7 branch plus the 5x5 one, which merge into a single 7x7
# kernel at inference, as in ConvNeXt). It is the small-kernel model of the ERF comparison in README.md
# (Analysis), made with tools/analysis/visualize_erf.py.
#   python tools/dataset_converters/make_toy_data.py && python tools/train.py CONFIG
_base_ = './upernet_slak-toy_1xb8-1000iter_toy-ade-128x128.py'

model = dict(backbone=dict(kernel_size=(7, 7, 7, 7), decompose=False))
