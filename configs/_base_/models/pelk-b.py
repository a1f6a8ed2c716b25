# PeLK-B (CVPR 2024) as a dense-prediction backbone: PeLK-S's depths and kernels, wider stages.
_base_ = './pelk-t.py'
import mmslak.models.backbones.pelk as pelk

backbone = dict(arch='base', init_cfg=dict(checkpoint='checkpoints/pelk-b_in1k.pth'))
stage_channels = pelk.PeLK.arch_widths(backbone['arch'])
