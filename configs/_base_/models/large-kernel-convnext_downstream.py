# What SLaK and PeLK share as dense-prediction backbones (the official SLaK downstream recipe): drop path
# 0.4, layer scale 1, all four stages out, each with its own LayerNorm, no global pooling, and ImageNet
# weights (converted with tools/model_converters/slak2mmslak.py) loaded under `backbone.`. The bases
# {slak,pelk}-{t,s,b,b101}.py and large-kernel-convnext_toy.py add the type, arch, kernels and checkpoint.
# mmengine lets only one base define `model`, so the model bases define variables that a task config reads
# next to its recipe base (configs/_base_/recipes):
#   model = dict(backbone=_base_.backbone, neck=dict(in_channels=_base_.stage_channels))
backbone = dict(
    _delete_=True,  # replaces the stock config's backbone
    drop_path_rate=0.4,
    layer_scale_init_value=1.0,
    out_indices=(0, 1, 2, 3),
    gap_before_final_norm=False,
    init_cfg=dict(type='Pretrained', prefix='backbone.'))
