# Cascade Mask R-CNN with FPN and a SLaK-T backbone on COCO, 3x schedule (36 epochs), total batch 16:
# 4conv1fc box heads with SyncBN, GIoU loss on decoded boxes, DETR-style multi-scale + crop augmentation.
# Reported in the SLaK paper (ICLR 2023): 51.3 box AP / 44.3 mask AP.
_base_ = 'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)

# ImageNet weights converted with tools/model_converters/slak2mmslak.py (see the README quick start).
checkpoint_file = 'checkpoints/slak-t_in1k.pth'
# Stage widths: SLaK.arch_settings['tiny'] widths times the default width_factor 1.3.
stage_channels = [int(width * 1.3) for width in (96, 192, 384, 768)]

model = dict(
    backbone=dict(
        _delete_=True,
        type='SLaK',
        arch='tiny',
        kernel_size=(51, 49, 47, 13),
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file, prefix='backbone.')),
    neck=dict(in_channels=stage_channels))

# fp32 by default; `tools/train.py --amp` switches to mixed precision (float16 on GPUs, bfloat16 on CPUs).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LargeKernelLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise', num_layers=6))

# The official downstream code keeps the zeros of a sparse ImageNet checkpoint during fine-tuning; with a
# dense checkpoint this hook warns once and training stays dense.
custom_hooks = [dict(type='SparseFinetuneHook')]
