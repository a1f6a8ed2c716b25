# PeLK-S (CVPR 2024) as a dense-prediction backbone: PeLK-T's widths and kernels, 27 blocks in stage 3.
_base_ = './pelk-t.py'

backbone = dict(arch='small', init_cfg=dict(checkpoint='checkpoints/pelk-s_in1k.pth'))
