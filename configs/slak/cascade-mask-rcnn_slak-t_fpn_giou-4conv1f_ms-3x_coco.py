# Cascade Mask R-CNN with FPN and a SLaK-T backbone on COCO, 3x schedule (36 epochs), total batch 16:
# 4conv1fc box heads with SyncBN, GIoU loss on decoded boxes, DETR-style multi-scale + crop augmentation.
# Reported in the SLaK paper (ICLR 2023): 51.3 box AP / 44.3 mask AP.
_base_ = [
    'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py',
    '../_base_/models/slak-t.py'
]
custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)

# SLaK-T with the downstream recipe, its ImageNet checkpoint and stage widths: configs/_base_/models/slak-t.py.
checkpoint_file = {{_base_.slak_t_checkpoint}}

model = dict(
    backbone={{_base_.slak_t_backbone}},
    neck=dict(in_channels={{_base_.slak_t_channels}}))

# fp32 by default; `tools/train.py --amp` switches to mixed precision (float16 on GPUs, bfloat16 on CPUs).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LargeKernelLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise', num_layers=6))
