# PeLK-S on ImageNet-1k, 224x224: the recipe of pelk-tiny_in1k.py with SLaK-S's drop path 0.4 and sparse-
# training schedule (update every 100 steps, prune rate 0.3).
# Reported in the PeLK paper (CVPR 2024): 83.9 top-1.
_base_ = './pelk-tiny_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.4))

# The EMA hook as it is; the sparse-training hook with S's schedule.
custom_hooks = [_base_.custom_hooks[0], dict(_base_.custom_hooks[1], update_interval=100, prune_rate=0.3)]
