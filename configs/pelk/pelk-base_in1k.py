# PeLK-B on ImageNet-1k, 224x224: the recipe of pelk-small_in1k.py with SLaK-B's drop path 0.5 and the
# wider B stages.
# Reported in the PeLK paper (CVPR 2024): 84.2 top-1.
_base_ = './pelk-small_in1k.py'
import mmslak.models.backbones.pelk as pelk

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=pelk.PeLK.arch_widths('base')[-1]))
