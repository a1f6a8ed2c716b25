# UperNet on ADE20K, 512x512 crops, 160k iterations, total batch 16 (4 GPUs x 4 images), as SLaK and PeLK
# train it: AdamW with stage-wise lr decay 0.9, poly schedule after a 1500-iteration warm-up, sliding-window
# test, and a sparse checkpoint's zeros kept. A task config adds a backbone from configs/_base_/models.
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py',
    '../sparse-finetune_runtime.py'
]
custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', constructor='LargeKernelLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise'))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000)
]

train_cfg = dict(val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=8000))
