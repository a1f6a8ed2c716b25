# SLaK-B on ImageNet-1k: the recipe of slak-small_in1k.py with drop path 0.5 and the wider B stages.
_base_ = './slak-small_in1k.py'
import mmslak.models.backbones.slak as slak

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=slak.SLaK.arch_widths('base')[-1]))
