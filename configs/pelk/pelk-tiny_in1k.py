# PeLK-T on ImageNet-1k, 224x224, 300 epochs, total batch 4096 (32 GPUs x 128), 40% sparse training.
# Reported in the PeLK paper (CVPR 2024): 82.6 top-1. PeLK keeps SLaK's recipe, which this follows:
# AdamW lr 4e-3 (wd 0.05, 20 warm-up epochs, cosine), EMA 0.9999, label smoothing 0.1, Mixup/CutMix,
# RandAugment and random erasing (the Swin/ConvNeXt pipeline), drop path 0.1 (T) / 0.4 (S) / 0.5 (B),
# SNIP-initialised dynamic sparsity 40% with random regrowth.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='PeLK', arch='tiny', drop_path_rate=0.1),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        # int(768 * 1.3): PeLK.arch_settings['tiny'] widths times the default width_factor.
        in_channels=998,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None),
    init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

train_dataloader = dict(batch_size=128)

# The positional embeddings get no weight decay, like the norms and biases.
optim_wrapper = dict(
    optimizer=dict(lr=4e-3),
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=None)

custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    # SLaK-T's schedule: masks updated every 2000 steps, half of the active weights replaced at first.
    dict(type='SparseTrainingHook', sparsity=0.4, init='snip', update_interval=2000, prune_rate=0.5,
         params='model'),
]

auto_scale_lr = dict(base_batch_size=4096)
