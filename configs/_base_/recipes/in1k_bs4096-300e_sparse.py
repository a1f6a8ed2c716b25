# ImageNet-1k classification as SLaK trains it (https://github.com/VITA-Group/SLaK) and PeLK keeps: 300
# epochs, AdamW lr 4e-3 at total batch 4096, 20 warm-up epochs, cosine to 1e-6, weight decay 0.05 (none on
# norms, biases and layer scales), EMA 0.9999, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, RandAugment and
# random erasing, and dynamic sparse training at 40% sparsity. A task config adds the backbone and the head's
# input channels.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None),
    init_cfg=dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=.02, bias=0.),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# 32 GPUs x 128 images = 4096 (the official 8 GPUs x 128 x 4 accumulation steps).
train_dataloader = dict(batch_size=128)

optim_wrapper = dict(optimizer=dict(lr=4e-3), clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=20)
]

custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    # SNIP layer densities with random masks; prune by magnitude and regrow at random every 2000 steps,
    # prune rate 0.5 decayed by cosine (SLaK-T's schedule); every conv and linear weight is sparse, the head
    # included.
    dict(
        type='SparseTrainingHook',
        sparsity=0.4,
        init='snip',
        growth='random',
        update_interval=2000,
        prune_rate=0.5,
        params='model'),
]

auto_scale_lr = dict(base_batch_size=4096)
