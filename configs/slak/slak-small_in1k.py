# SLaK-S on ImageNet-1k: the recipe of slak-tiny_in1k.py with drop path 0.4 and the S sparse-training
# schedule (update every 100 steps, prune rate 0.3).
_base_ = './slak-tiny_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.4))

# The EMA hook as it is; the sparse-training hook with S's schedule.
custom_hooks = [_base_.custom_hooks[0], dict(_base_.custom_hooks[1], update_interval=100, prune_rate=0.3)]
