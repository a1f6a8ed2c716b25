# PeLK-T (CVPR 2024) as a dense-prediction backbone: the arch's kernels (51-49-47-13, peripheral up to the
# 47), its ImageNet checkpoint and the settings of large-kernel-convnext_downstream.py.
_base_ = './large-kernel-convnext_downstream.py'
# Imports come after `_base_`: mmengine reads a config that starts with one as a pure-Python config.
import mmslak.models.backbones.pelk as pelk

backbone = dict(type='PeLK', arch='tiny', init_cfg=dict(checkpoint='checkpoints/pelk-t_in1k.pth'))
# The widths of the stages the backbone returns: what a neck or decode head takes in.
stage_channels = pelk.PeLK.arch_widths(backbone['arch'])
