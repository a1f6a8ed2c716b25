# SLaK-B (ICLR 2023) as a dense-prediction backbone: SLaK-S's depths and kernels, wider stages.
_base_ = './slak-t.py'
import mmslak.models.backbones.slak as slak

backbone = dict(arch='base', init_cfg=dict(checkpoint='checkpoints/slak-b_in1k.pth'))
stage_channels = slak.SLaK.arch_widths(backbone['arch'])
