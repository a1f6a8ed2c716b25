# SLaK-S on ImageNet-1k: the recipe of slak-tiny_in1k.py with drop path 0.4 and the S sparse-training
# schedule (update every 100 steps, prune rate 0.3).
_base_ = './slak-tiny_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.4))

custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    dict(
        type='SparseTrainingHook',
        sparsity=0.4,
        init='snip',
        growth='random',
        update_interval=100,
        prune_rate=0.3,
        params='model'),
]
