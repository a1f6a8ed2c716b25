# PeLK-B on ImageNet-1k, 224x224: the PeLK-S recipe with drop path 0.5.
# Reported in the PeLK paper (CVPR 2024): 84.2 top-1.
_base_ = './pelk-small_in1k.py'

# int(1024 * 1.3): PeLK.arch_settings['base'] widths times the default width_factor.
model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1331))
