# SLaK-T as a dense-prediction backbone: the block the UperNet, Faster R-CNN and Cascade Mask R-CNN configs
# share (and through them the S, B and PeLK ones), with the SLaK downstream recipe: kernels 51-49-47-13,
# drop path 0.4, layer scale 1, all four stages out, ImageNet weights converted with
# tools/model_converters/slak2mmslak.py, and the zeros of a sparse checkpoint kept during fine-tuning.
# mmengine lets only one base define `model`, so this file defines variables that a task config reads
# next to its stock bases:
#   model = dict(backbone={{_base_.slak_t_backbone}}, neck=dict(in_channels={{_base_.slak_t_channels}}))
slak_t_checkpoint = 'checkpoints/slak-t_in1k.pth'
# Stage widths: SLaK.arch_settings['tiny'] widths times the default width_factor 1.3.
slak_t_channels = [int(width * 1.3) for width in (96, 192, 384, 768)]
slak_t_channels_stage3 = slak_t_channels[2]  # UperNet's auxiliary FCN head reads stage 3
slak_t_backbone = dict(
    _delete_=True,  # replaces the stock config's backbone
    type='SLaK',
    arch='tiny',
    kernel_size=(51, 49, 47, 13),
    drop_path_rate=0.4,
    layer_scale_init_value=1.0,
    out_indices=(0, 1, 2, 3),
    gap_before_final_norm=False,
    init_cfg=dict(type='Pretrained', checkpoint=slak_t_checkpoint, prefix='backbone.'))

# The official downstream code keeps the zeros of a sparse ImageNet checkpoint during fine-tuning; with a
# dense checkpoint this hook warns once and training stays dense.
custom_hooks = [dict(type='SparseFinetuneHook')]
