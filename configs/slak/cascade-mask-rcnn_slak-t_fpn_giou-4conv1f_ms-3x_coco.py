# Cascade Mask R-CNN with FPN and a SLaK-T backbone on COCO, 3x schedule (36 epochs), total batch 16:
# 4conv1fc box heads with SyncBN, GIoU loss on decoded boxes, DETR-style multi-scale + crop augmentation.
# Reported in the SLaK paper (ICLR 2023): 51.3 box AP / 44.3 mask AP.
_base_ = ['../_base_/recipes/cascade-mask-rcnn_fpn_giou-4conv1f_ms-3x_coco.py', '../_base_/models/slak-t.py']

model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))
