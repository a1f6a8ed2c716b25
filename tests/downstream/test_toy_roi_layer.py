"""The toy detectors' RoI layer (configs/_base_/toy_data.py ``cpu_roi_layer``): mmcv's RoIAlign running
torchvision's kernel computes what mmcv's own kernel computes, bit for bit, so the choice changes no result."""
import pytest
import torch
from mmcv.ops import RoIAlign
from mmengine.config import Config

TOY_DETECTORS = ('configs/toy/faster-rcnn_slak-toy_fpn_1xb4-8e_toy-voc.py',
                 'configs/toy/cascade-mask-rcnn_pelk-toy_fpn_1xb4-8e_toy-coco.py')


def roi_layers(config):
    roi_head = Config.fromfile(config).model.roi_head
    extractors = [roi_head.bbox_roi_extractor, roi_head.get('mask_roi_extractor')]
    return [extractor.roi_layer for extractor in extractors if extractor is not None]


@pytest.mark.parametrize('config', TOY_DETECTORS)
def test_toy_roi_layers_equal_mmcv_kernel_bit_for_bit(config):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 32, 32, generator=generator)
    # RoIs of every size a 128x128 toy image gives, some reaching past the feature map
    corners = torch.rand(40, 2, generator=generator) * 120
    sizes = torch.rand(40, 2, generator=generator) * 80 + 1
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=generator).float(), corners, corners + sizes], 1)
    layers = roi_layers(config)
    assert layers and all(layer.use_torchvision for layer in layers)
    for layer in layers:
        options = {key: value for key, value in layer.items() if key not in ('type', 'use_torchvision')}
        results = []
        for use_torchvision in (False, True):
            x = features.clone().requires_grad_()
            out = RoIAlign(spatial_scale=0.25, use_torchvision=use_torchvision, **options)(x, rois)
            out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
            results.append((out.detach(), x.grad))
        (mmcv_out, mmcv_grad), (torchvision_out, torchvision_grad) = results
        assert mmcv_out.abs().sum() > 0 and mmcv_grad.abs().sum() > 0
        assert torch.equal(torchvision_out, mmcv_out)
        assert torch.equal(torchvision_grad, mmcv_grad)
