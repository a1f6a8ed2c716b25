# Toy Faster R-CNN-PeLK: the recipe of the SLaK toy with the small PeLK of the same widths, depths and
# kernel sizes (configs/_base_/models/pelk-toy.py: the 21 and 17 kernels of the first two stages are
# peripheral, the smaller ones dense).
#   python tools/dataset_converters/make_toy_data.py && python tools/train.py CONFIG
# No paper result applies; the reached metrics are in README.md (Quick start).
_base_ = ['../_base_/recipes/faster-rcnn_fpn_1xb4-8e_toy-voc.py', '../_base_/models/pelk-toy.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))
