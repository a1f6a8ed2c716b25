# Toy Cascade Mask R-CNN-SLaK: a small SLaK with a slim FPN and heads on the toy COCO-format data (128x128
# scenes of textured circles, squares and triangles with polygon masks, see
# tools/dataset_converters/make_toy_data.py); trains in a few minutes on 2 CPU cores. It is the SLaK-T COCO
# recipe (4conv1fc GIoU box heads, layer-wise lr decay) with a smaller model, small images and a short
# schedule:
#   python tools/dataset_converters/make_toy_data.py && python tools/train.py CONFIG
# No paper result applies; the reached box and mask AP are in README.md (Quick start).
_base_ = ['../_base_/recipes/cascade-mask-rcnn_fpn_1xb4-8e_toy-coco.py', '../_base_/models/slak-toy.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))
