"""torch.compile(fullgraph=True) of SLaK and PeLK: one graph, eager's outputs and gradients.

``fullgraph=True`` fails on any graph break, so these tests keep the backbones and the custom ops of
mmslak.ops traceable. Full-size SLaK-T and PeLK-T go through Dynamo and AOTAutograd (``aot_eager``: the
whole forward and backward traced with fake tensors through our ops' fake kernels and autograd
formulas, then run as traced); Inductor's code generation, minutes of C++ compilation for 18 blocks on
2 cores, runs on small models with the same kinds of blocks (peripheral and decomposed kernels of
several sizes). A 32x32 input keeps the runs short: the stages see 8x8 to 1x1 maps, smaller than most
kernels, which the ops pad.
"""
import pytest
import torch

from mmslak.models import PeLK, SLaK

pytestmark = pytest.mark.slow

SMALL = dict(arch=dict(depths=[1, 1, 1, 1], widths=[8, 16, 16, 24]), kernel_size=(21, 17, 13, 7))


def compiled_matches_eager(model, backend):
    torch.manual_seed(0)
    model.init_weights()
    model.train()  # batch statistics in the branch BatchNorms, as in training
    image = torch.randn(2, 3, 32, 32)
    params = [param for param in model.parameters() if param.requires_grad]

    def outputs_and_grads(module):
        inputs = image.clone().requires_grad_()
        outs = module(inputs)
        loss = sum((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() for out in outs)
        return outs, torch.autograd.grad(loss, [inputs, *params])

    # Training-mode BatchNorm normalises with the batch's statistics, so the running statistics that the
    # first run updates do not change the second run's outputs.
    eager_outs, eager_grads = outputs_and_grads(model)
    compiled_outs, compiled_grads = outputs_and_grads(torch.compile(model, fullgraph=True, backend=backend))
    assert len(compiled_outs) == len(eager_outs) == 4
    for eager, compiled in zip(eager_outs, compiled_outs):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    for eager, compiled in zip(eager_grads, compiled_grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize('backbone_cls', [SLaK, PeLK])
def test_full_size_tiny_traces_as_one_graph(backbone_cls):
    model = backbone_cls(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False)
    compiled_matches_eager(model, 'aot_eager')


@pytest.mark.parametrize('backbone_cls', [SLaK, PeLK])
def test_small_model_compiles_with_inductor(backbone_cls):
    model = backbone_cls(**SMALL, out_indices=(0, 1, 2, 3), gap_before_final_norm=False)
    compiled_matches_eager(model, 'inductor')
