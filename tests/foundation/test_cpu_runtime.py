"""The CPU stand-ins for mmengine's GPU-only AMP wrapper and DDP device handling."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmslak.engine.cpu_runtime import CPUAmpOptimWrapper, configure_cpu_runtime


def test_optim_context_runs_bf16_autocast_and_steps_in_float32():
    model = nn.Linear(4, 2)
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with wrapper.optim_context(model):
        assert torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16
        out = model(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    before = model.weight.detach().clone()
    wrapper.update_params(out.float().sum())
    assert model.weight.dtype == torch.float32 and not torch.equal(before, model.weight)
    assert not torch.is_autocast_enabled('cpu')


def test_float16_is_refused_with_a_reason():
    with pytest.raises(ValueError, match='bfloat16'):
        CPUAmpOptimWrapper(dtype='float16', optimizer=torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1))


def test_amp_replaces_the_optim_wrapper_and_drops_loss_scaling():
    cfg = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper', loss_scale='dynamic', optimizer=dict(type='SGD'))))
    configure_cpu_runtime(cfg, 'none', amp=True)
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper' and 'loss_scale' not in cfg.optim_wrapper


def test_amp_refuses_an_unrelated_optim_wrapper():
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapperDict')))
    with pytest.raises(RuntimeError, match='OptimWrapperDict'):
        configure_cpu_runtime(cfg, 'none', amp=True)
