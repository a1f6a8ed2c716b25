# SLaK-T (ICLR 2023) as a dense-prediction backbone: kernels 51-49-47-13, its ImageNet checkpoint and the
# settings of large-kernel-convnext_downstream.py.
_base_ = './large-kernel-convnext_downstream.py'
# Imports come after `_base_`: mmengine reads a config that starts with one as a pure-Python config.
import mmslak.models.backbones.slak as slak

backbone = dict(
    type='SLaK',
    arch='tiny',
    kernel_size=(51, 49, 47, 13),
    init_cfg=dict(checkpoint='checkpoints/slak-t_in1k.pth'))
# The widths of the stages the backbone returns: what a neck or decode head takes in.
stage_channels = slak.SLaK.arch_widths(backbone['arch'])
