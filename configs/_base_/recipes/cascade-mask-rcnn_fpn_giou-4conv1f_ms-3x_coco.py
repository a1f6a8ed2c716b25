# Cascade Mask R-CNN with FPN on COCO, 3x schedule (36 epochs), total batch 16, as SLaK and PeLK train it:
# MMDetection's ConvNeXt recipe (4conv1fc box heads with SyncBN, GIoU loss on decoded boxes, DETR-style
# multi-scale + crop augmentation) with AdamW and layer-wise lr decay 0.7 over the backbone's layers, and a
# sparse checkpoint's zeros kept. A task config adds a backbone from configs/_base_/models.
_base_ = [
    'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py',
    '../sparse-finetune_runtime.py'
]
custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)

# fp32 by default; `tools/train.py --amp` switches to mixed precision (float16 on GPUs, bfloat16 on CPUs).
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', constructor='LargeKernelLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise'))
