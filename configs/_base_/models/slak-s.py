# SLaK-S (ICLR 2023) as a dense-prediction backbone: SLaK-T's widths and kernels, 27 blocks in stage 3.
_base_ = './slak-t.py'

backbone = dict(arch='small', init_cfg=dict(checkpoint='checkpoints/slak-s_in1k.pth'))
