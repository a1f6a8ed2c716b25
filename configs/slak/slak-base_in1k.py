# SLaK-B on ImageNet-1k: the recipe of slak-small_in1k.py with drop path 0.5 and widths
# int(1.3 x (128, 256, 512, 1024)) = (166, 332, 665, 1331).
_base_ = './slak-small_in1k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1331))
