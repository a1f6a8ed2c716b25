"""The installed OpenMMLab stack is real on this CPU: mmcv's compiled ops and stock models of each task."""
import pytest
import torch
from mmengine.hub import get_config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope


def test_mmcv_nms_against_hand_computed_result():
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # IoU(box0, box1) = 81 / 119 = 0.68 > 0.5: box1 is suppressed; box2 does not overlap.
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    _, keep = nms(boxes, scores, iou_threshold=0.7)
    assert keep.tolist() == [0, 1, 2]


def test_mmcv_roi_align_averages_a_linear_ramp():
    from mmcv.ops import RoIAlign
    # feature(y, x) = x: bilinear sampling of a linear ramp returns the sample's x exactly.
    feature = torch.arange(8.).repeat(8, 1)[None, None]
    rois = torch.tensor([[0., 1., 1., 5., 5.]])  # box from x=1 to x=5 (aligned=True shifts by -0.5)
    out = RoIAlign(output_size=2, spatial_scale=1.0, sampling_ratio=2, aligned=True)(feature, rois)
    # bins cover x in [0.5, 2.5] and [2.5, 4.5]; their sample means are 1.5 and 3.5.
    assert torch.allclose(out[0, 0], torch.tensor([[1.5, 3.5], [1.5, 3.5]]))


def build_from_shipped_config(scope, config_name):
    cfg = get_config(f'{scope}::{config_name}')
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = revert_sync_batchnorm(registry.build(cfg.model))
    return model.eval()


def test_stock_mmdet_faster_rcnn_forward():
    from mmdet.structures import DetDataSample
    model = build_from_shipped_config('mmdet', 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    sample = DetDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96), scale_factor=(1., 1.)))
    data = model.data_preprocessor(dict(inputs=[torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)],
                                        data_samples=[sample]))
    with torch.no_grad():
        results = model(**data, mode='predict')
    assert len(results) == 1 and results[0].pred_instances.bboxes.shape[-1] == 4


def test_stock_mmseg_upernet_forward():
    model = build_from_shipped_config('mmseg', 'upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py')
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 19, 16, 16)


def test_stock_mmpretrain_classifier_forward():
    model = build_from_shipped_config('mmpretrain', 'resnet/resnet18_8xb32_in1k.py')
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64), mode='tensor')
    assert logits.shape == (2, 1000)


@pytest.mark.parametrize('module', ['mmslak', 'mmdet', 'mmseg', 'mmpretrain', 'mmcv.ops'])
def test_packages_import(module):
    __import__(module)
