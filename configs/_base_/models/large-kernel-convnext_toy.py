# The small backbone of the toy configs (configs/toy): depths 1-1-2-1, ConvNeXt-like widths 24-48-96-192
# before the width_factor 1.3, kernels 21-17-13-7, no drop path, trained from scratch. slak-toy.py and
# pelk-toy.py set the type.
_base_ = './large-kernel-convnext_downstream.py'
import mmslak.models.backbones.slak as slak

backbone = dict(
    arch=dict(depths=[1, 1, 2, 1], widths=[24, 48, 96, 192]),
    kernel_size=(21, 17, 13, 7),
    drop_path_rate=0.,
    init_cfg=None)
# SLaK's stage widths, which are PeLK's too.
stage_channels = slak.SLaK.arch_widths(backbone['arch'])
