# Toy Faster R-CNN-PeLK: the SLaK toy config with a small PeLK backbone of the same widths, depths and
# kernel sizes. The 21 and 17 kernels of the first two stages are peripheral (shared cells outside a 5x5
# centre); the smaller ones are dense (PeLK's dense_max_kernel=13).
#   python tools/dataset_converters/make_toy_data.py && python tools/train.py CONFIG
# No paper result applies; the reached metrics are in README.md (Quick start).
_base_ = './faster-rcnn_slak-toy_fpn_1xb4-8e_toy-voc.py'

model = dict(backbone=dict(type='PeLK'))
