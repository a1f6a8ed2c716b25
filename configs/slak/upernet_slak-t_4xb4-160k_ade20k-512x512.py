# UperNet with a SLaK-T backbone on ADE20K, 512x512 crops, 160k iterations, total batch 16.
# Reported in the SLaK paper (ICLR 2023): 47.6 mIoU.
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py',
    '../_base_/models/slak-t.py'
]
custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)

# SLaK-T with the downstream recipe, its ImageNet checkpoint and stage widths: configs/_base_/models/slak-t.py.
checkpoint_file = {{_base_.slak_t_checkpoint}}
crop_size = (512, 512)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone={{_base_.slak_t_backbone}},
    decode_head=dict(in_channels={{_base_.slak_t_channels}}, num_classes=150),
    auxiliary_head=dict(in_channels={{_base_.slak_t_channels_stage3}}, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LargeKernelLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000)
]

# 4 GPUs x 4 images (the ade20k base loads 4 images per GPU).
train_cfg = dict(val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=8000))
