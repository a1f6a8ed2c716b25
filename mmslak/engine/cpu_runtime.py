"""What the MMEngine Runner needs to train on CPUs: bf16 autocast and gloo DistributedDataParallel.

On GPUs the stock paths (``AmpOptimWrapper``, ``MMDistributedDataParallel`` over NCCL) stay untouched;
``tools/train.py`` and ``tools/test.py`` pick these only when CUDA is not available.
"""
import os
from contextlib import contextmanager

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper

from mmslak.registry import MODEL_WRAPPERS, OPTIM_WRAPPERS, register_module

__all__ = ['CPUAmpOptimWrapper', 'CPUDistributedDataParallel', 'configure_cpu_runtime', 'cpu_supports_bf16']


def cpu_supports_bf16():
    """True when this CPU computes bf16 natively (AVX-512 BF16 or AMX), so bf16 autocast is worth it."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@register_module(OPTIM_WRAPPERS)
class CPUAmpOptimWrapper(OptimWrapper):
    """Mixed precision on the CPU: forward under ``torch.autocast('cpu', dtype=torch.bfloat16)``.

    MMEngine's ``AmpOptimWrapper`` refuses to run without a GPU. bf16 has float32's exponent range, so no
    loss scaling is needed; parameters, gradients and optimizer states stay float32.

    Args:
        dtype (str): autocast dtype; only ``'bfloat16'`` is supported on the CPU.
        **kwargs: arguments of :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self, dtype='bfloat16', **kwargs):
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(f'CPUAmpOptimWrapper supports only dtype="bfloat16", got {dtype!r}: float16 '
                             'autocast on the CPU needs loss scaling and is slower than bfloat16')
        super().__init__(**kwargs)
        self.cast_dtype = torch.bfloat16

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


@register_module(MODEL_WRAPPERS)
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for modules on the CPU (gloo backend).

    The Runner passes ``device_ids=[LOCAL_RANK]`` to every DistributedDataParallel subclass, which torch rejects
    for CPU modules; this wrapper drops it.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def init_cpu_distributed(launcher):
    """Initialise a gloo process group from the launcher's environment, as mmengine would for GPUs.

    mmengine's launchers call ``torch.cuda.set_device`` first, which fails without a CUDA driver; the Runner
    skips its own initialisation once a process group exists.

    Args:
        launcher (str): ``'pytorch'`` (torchrun's RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT) or ``'slurm'``.
    """
    if torch_dist.is_initialized():
        return
    if launcher == 'slurm':
        os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
        os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
        os.environ.setdefault('LOCAL_RANK', os.environ['SLURM_LOCALID'])
        if 'MASTER_ADDR' not in os.environ:
            import subprocess
            nodes = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {nodes} | head -n1')
        os.environ.setdefault('MASTER_PORT', '29500')
    elif launcher != 'pytorch':
        raise ValueError(f'launcher must be "pytorch" or "slurm" for CPU distributed runs, got {launcher!r}')
    torch_dist.init_process_group(backend='gloo')


def configure_cpu_runtime(cfg, launcher, amp=False):
    """Adapt a config to a machine without GPU: gloo DDP wrapper and bf16 autocast when asked for.

    Args:
        cfg (Config): the config to edit in place.
        launcher (str): the ``--launcher`` argument.
        amp (bool): whether ``--amp`` was given.

    Raises:
        RuntimeError: ``amp`` on a CPU without native bf16, or for a two-stage detector (mmcv's CPU nms and
            RoIAlign take float32 only).
    """
    if launcher != 'none':
        init_cpu_distributed(launcher)
        if cfg.get('model_wrapper_cfg') is None:
            cfg.model_wrapper_cfg = dict(type='CPUDistributedDataParallel', broadcast_buffers=False,
                                         find_unused_parameters=cfg.get('find_unused_parameters', False))
    if amp:
        if not cpu_supports_bf16():
            raise RuntimeError('--amp without a GPU means bfloat16 autocast on the CPU, but this CPU has no '
                               'native bfloat16 (AVX-512 BF16 or AMX); train without --amp')
        model = cfg.get('model', {})
        if 'rpn_head' in model or 'roi_head' in model:
            # Found by running the toy detectors with --amp: their RPN proposals reach mmcv's nms in bfloat16.
            raise RuntimeError('--amp without a GPU means bfloat16 autocast on the CPU, but mmcv 2.1.0\'s CPU nms '
                               'and RoIAlign, which this two-stage detector runs while training, take float32 '
                               'only; train it without --amp (or with --amp on a GPU)')
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper not in ('OptimWrapper', 'AmpOptimWrapper', 'CPUAmpOptimWrapper'):
            raise RuntimeError(f'--amp replaces the optim wrapper, but the config uses {optim_wrapper}')
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
        cfg.optim_wrapper.pop('loss_scale', None)
