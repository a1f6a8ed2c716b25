# Toy UperNet-SLaK: a small SLaK on the toy ADE20K-format data (128x128 scenes of textured circles, squares
# and triangles, see tools/dataset_converters/make_toy_data.py); trains in a few minutes on 2 CPU cores.
# It is the SLaK-T ADE20K recipe with a smaller backbone and head, small images and a short schedule:
#   python tools/dataset_converters/make_toy_data.py && python tools/train.py CONFIG
# No paper result applies; the reached mIoU is in README.md (Quick start).
_base_ = ['../_base_/recipes/upernet_1xb8-1000iter_toy-ade-128x128.py', '../_base_/models/slak-toy.py']

model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=_base_.stage_channels),
    auxiliary_head=dict(in_channels=_base_.stage_channels[2]))
