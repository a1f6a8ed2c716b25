# PeLK-S on ImageNet-1k, 224x224: the PeLK-T recipe with drop path 0.4 and SLaK-S's mask schedule.
# Reported in the PeLK paper (CVPR 2024): 83.9 top-1.
_base_ = './pelk-tiny_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.4))

custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    dict(type='SparseTrainingHook', sparsity=0.4, init='snip', update_interval=100, prune_rate=0.3,
         params='model'),
]
