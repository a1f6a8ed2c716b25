# PeLK-B-101 (CVPR 2024) as a dense-prediction backbone: PeLK-B with kernels 101-69-67-13 and a 7x7 focus
# (the arch's), pretrained on ImageNet at 384x384.
_base_ = './pelk-b.py'

backbone = dict(arch='base-101', init_cfg=dict(checkpoint='checkpoints/pelk-b101_in1k-384px.pth'))
