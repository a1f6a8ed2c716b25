# A classifier small enough to train for a few iterations on 2 CPU cores; the tools tests point
# train_dataloader.dataset.data_root at a generated image folder (one sub-folder per class).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmslak'], allow_failed_imports=False)

arch = dict(depths=[1, 1, 1, 1], widths=[8, 16, 32, 64])
width_factor = 1.3
num_classes = 2

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='SLaK',
        arch=arch,
        kernel_size=(9, 7, 7, 5),
        short_kernel=3,
        width_factor=width_factor,
        out_indices=(3, ),
        gap_before_final_norm=True),
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=int(arch['widths'][-1] * width_factor),
        loss=dict(type='CrossEntropyLoss')))

data_preprocessor = dict(
    num_classes=num_classes, mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
dataset = dict(
    type='CustomDataset',
    data_root='',
    pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=32),
        dict(type='PackInputs'),
    ])
train_dataloader = dict(
    batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True), dataset=dataset)
test_dataloader = dict(
    batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False), dataset=dataset)
test_cfg = dict()
test_evaluator = dict(type='Accuracy', topk=(1, ))
train_cfg = dict(by_epoch=False, max_iters=4)
log_processor = dict(by_epoch=False)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False))
randomness = dict(seed=0)
