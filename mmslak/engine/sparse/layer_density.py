"""Layer-wise densities for sparse training: how many weights of each layer are non-zero.

All three rules split one global density over the sparse layers; the masks themselves are drawn at random
afterwards (:func:`mmslak.engine.sparse.mask_ops.random_mask`), as in the official SLaK code.
"""
import copy

import torch
from torch import nn


def uniform_density(shapes, density):
    """Every layer gets the global density.

    Args:
        shapes (dict[str, torch.Size]): parameter name to shape.
        density (float): fraction of non-zero weights, in (0, 1].

    Returns:
        dict[str, float]: parameter name to density.
    """
    return {name: density for name in shapes}


def erk_density(shapes, density, power_scale=1.0):
    """Erdős–Rényi-Kernel densities (`RigL <https://arxiv.org/abs/1911.11134>`_, ``sparselearning`` ERK).

    A layer's density is proportional to ``(sum(shape) / prod(shape)) ** power_scale``, scaled so that the
    total number of non-zero weights is ``density`` times the total; layers whose density would exceed 1 are
    made dense and the scale is solved again for the others.

    Args:
        shapes (dict[str, torch.Size]): parameter name to shape.
        density (float): global fraction of non-zero weights, in (0, 1].
        power_scale (float): exponent of the raw ERK score. Defaults to 1.0.

    Returns:
        dict[str, float]: parameter name to density.
    """
    numels = {name: float(torch.Size(shape).numel()) for name, shape in shapes.items()}
    raw = {name: (sum(shape) / numels[name])**power_scale for name, shape in shapes.items()}
    dense = set()
    while True:
        sparse_names = [name for name in shapes if name not in dense]
        budget = density * sum(numels.values()) - sum(numels[name] for name in dense)
        scale = budget / sum(raw[name] * numels[name] for name in sparse_names)
        too_dense = [name for name in sparse_names if scale * raw[name] > 1]
        if not too_dense:
            break
        densest = max(raw[name] for name in too_dense)
        dense.update(name for name in too_dense if raw[name] == densest)
    return {name: 1.0 if name in dense else scale * raw[name] for name in shapes}


def snip_scores(model, data_batch, names):
    """SNIP connection sensitivities ``|w * dL/dw|`` (`SNIP <https://arxiv.org/abs/1810.02340>`_).

    As in the official SLaK ``SNIP`` function, the sparse weights of a copy of the model are re-drawn with
    Xavier-normal initialisation before one forward and backward pass on ``data_batch``; ``|w * dL/dw|`` is
    the gradient of the loss with respect to a multiplicative mask at 1. The model itself is not touched.
    The loss is the model's own training loss (the official code applied ``nll_loss`` to logits).

    Args:
        model (mmengine.model.BaseModel): the (unwrapped) model.
        data_batch: one batch of the training dataloader.
        names (list[str]): names of the sparse parameters.

    Returns:
        dict[str, torch.Tensor]: parameter name to score tensor (float32, shape of the parameter).
    """
    probe = copy.deepcopy(model)
    probe.train()
    params = dict(probe.named_parameters())
    for param in params.values():
        param.requires_grad_(False)
    for name in names:
        nn.init.xavier_normal_(params[name].data)
        params[name].requires_grad_(True)
    data = probe.data_preprocessor(data_batch, True)
    loss, _ = probe.parse_losses(probe(**data, mode='loss'))
    grads = torch.autograd.grad(loss, [params[name] for name in names], allow_unused=True)
    scores = {}
    for name, grad in zip(names, grads):
        weight = params[name].detach().float()
        scores[name] = torch.zeros_like(weight) if grad is None else (weight * grad.float()).abs()
    return scores


def snip_density(scores, density):
    """Layer densities from a global SNIP ranking: keep the ``density`` fraction of highest scores overall.

    This is what the official SLaK code calls ``sparse_init='snip'``: SNIP decides only how many weights
    each layer keeps; which weights are kept is drawn at random afterwards.

    Scores tied with the threshold share the remaining budget in proportion to their count per layer. Ties
    are common: kernel taps that only ever see padding (a 13-wide kernel on a 7x7 map) score exactly zero,
    and the official ``score >= threshold`` made every layer dense whenever the threshold was zero.

    Args:
        scores (dict[str, torch.Tensor]): parameter name to SNIP scores (:func:`snip_scores`).
        density (float): global fraction of non-zero weights, in (0, 1].

    Returns:
        dict[str, float]: parameter name to density.
    """
    all_scores = torch.cat([score.flatten() for score in scores.values()])
    num_keep = max(1, int(all_scores.numel() * density))
    threshold = torch.topk(all_scores, num_keep, sorted=True).values[-1]
    above = {name: int((score > threshold).count_nonzero()) for name, score in scores.items()}
    ties = {name: int((score == threshold).count_nonzero()) for name, score in scores.items()}
    tie_share = (num_keep - sum(above.values())) / sum(ties.values())
    return {name: (above[name] + tie_share * ties[name]) / score.numel() for name, score in scores.items()}
