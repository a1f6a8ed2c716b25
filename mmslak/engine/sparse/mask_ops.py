"""Mask operations of dynamic sparse training: random masks, magnitude pruning, growth, prune-rate schedule.

Masks are boolean tensors shaped like their weights (True = the weight may be non-zero). Every operation
takes and returns exact counts, so the number of active weights of a layer never drifts.
"""
import math

import torch

GROWTH_MODES = ('random', 'gradient', 'momentum')


def num_active(density, numel):
    """Number of active weights of a layer with ``numel`` weights at ``density`` (rounded, at least 1)."""
    return min(numel, max(1, round(density * numel)))


def random_mask(shape, density, generator):
    """A mask with exactly :func:`num_active` active positions chosen uniformly at random.

    The official code draws each position independently (``rand < density``); drawing an exact count keeps
    the layer's density within one weight of the target.

    Args:
        shape (torch.Size): shape of the weight.
        density (float): fraction of active positions.
        generator (torch.Generator): CPU generator, so every process draws the same mask.

    Returns:
        torch.Tensor: bool mask on the CPU.
    """
    numel = torch.Size(shape).numel()
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[torch.randperm(numel, generator=generator)[:num_active(density, numel)]] = True
    return mask.view(shape)


def prune_by_magnitude(mask, weight, num_prune):
    """Deactivate the ``num_prune`` active positions of smallest ``|weight|``.

    Args:
        mask (torch.Tensor): bool mask.
        weight (torch.Tensor): the weight.
        num_prune (int): how many active positions to deactivate.

    Returns:
        torch.Tensor: the new mask.
    """
    magnitude = weight.detach().abs().float().masked_fill(~mask, math.inf).flatten()
    pruned = mask.flatten().clone()
    pruned[torch.topk(magnitude, num_prune, largest=False).indices] = False
    return pruned.view_as(mask)


def grow(mask, num_grow, scores):
    """Activate the ``num_grow`` inactive positions of highest ``scores``.

    Args:
        mask (torch.Tensor): bool mask.
        num_grow (int): how many inactive positions to activate.
        scores (torch.Tensor): growth scores shaped like the mask (random numbers, ``|grad|`` or
            ``|momentum|``, see :func:`growth_scores`).

    Returns:
        torch.Tensor: the new mask.
    """
    candidates = scores.detach().float().masked_fill(mask, -math.inf).flatten()
    grown = mask.flatten().clone()
    grown[torch.topk(candidates, num_grow).indices] = True
    return grown.view_as(mask)


def growth_scores(mode, weight, optimizer_state, generator):
    """Scores deciding where weights regrow.

    Args:
        mode (str): ``'random'`` (uniform, like SET and official SLaK), ``'gradient'`` (``|dL/dw|`` of the
            last step, RigL) or ``'momentum'`` (``|first moment|`` of the optimizer, SNFS).
        weight (torch.nn.Parameter): the weight; its ``.grad`` is read for ``'gradient'``.
        optimizer_state (dict): the optimizer's state of the weight; ``momentum_buffer`` (SGD) or
            ``exp_avg`` (Adam, AdamW) is read for ``'momentum'``.
        generator (torch.Generator): CPU generator for ``'random'``.

    Returns:
        torch.Tensor: scores shaped like the weight, on the weight's device.
    """
    if mode == 'random':
        return torch.rand(weight.shape, generator=generator).to(weight.device)
    if mode == 'gradient':
        if weight.grad is None:
            raise RuntimeError('growth="gradient" needs the gradient of every sparse weight at the optimizer '
                               'step, but one has none (is it unused in the loss or frozen?)')
        return weight.grad.abs()
    if mode == 'momentum':
        for key in ('exp_avg', 'momentum_buffer'):
            if optimizer_state.get(key) is not None:
                return optimizer_state[key].abs()
        raise RuntimeError('growth="momentum" needs an optimizer with a first moment (SGD with momentum, '
                           f'Adam, AdamW); the optimizer state has only {sorted(optimizer_state)}')
    raise ValueError(f'growth must be one of {GROWTH_MODES}, got {mode!r}')


def cosine_prune_rate(step, total_steps, initial_rate, final_rate):
    """Prune rate at optimizer step ``step``: cosine from ``initial_rate`` (step 0) to ``final_rate``.

    The closed form of the official ``CosineDecay`` (``CosineAnnealingLR`` with ``eta_min=0.005``).
    """
    progress = min(step, total_steps) / total_steps
    return final_rate + (initial_rate - final_rate) * (1 + math.cos(math.pi * progress)) / 2


def pack_mask(mask):
    """Pack a bool mask into uint8 bits (8 positions per byte) for the checkpoint.

    Returns:
        dict: ``bits`` (uint8 tensor on the CPU) and ``shape`` (list of ints).
    """
    flat = mask.detach().flatten().cpu().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)]).view(-1, 8)
    bit_values = 2**torch.arange(8, dtype=torch.uint8)
    return dict(bits=(flat * bit_values).sum(dim=1, dtype=torch.uint8), shape=list(mask.shape))


def unpack_mask(packed):
    """Inverse of :func:`pack_mask`; returns the bool mask on the CPU."""
    bit_values = 2**torch.arange(8, dtype=torch.uint8)
    flat = (packed['bits'].view(-1, 1) & bit_values).ne(0).flatten()
    shape = torch.Size(packed['shape'])
    return flat[:shape.numel()].view(shape)
