# Cascade Mask R-CNN with FPN and a PeLK-T backbone on COCO, 1x schedule (12 epochs, steps at 8 and 11).
# Reported result: none for 1x; the PeLK paper's 51.4 box AP / 44.6 mask AP are for 3x.
_base_ = ['../_base_/recipes/cascade-mask-rcnn_fpn_giou-4conv1f_ms-1x_coco.py', '../_base_/models/pelk-t.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))
