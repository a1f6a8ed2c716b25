"""Layer densities and mask operations of sparse training, against hand-computed values and torch references."""
import math

import pytest
import torch
from torch import nn

from mmslak.engine.sparse.layer_density import erk_density, snip_density, uniform_density
from mmslak.engine.sparse.mask_ops import (cosine_prune_rate, grow, growth_scores, pack_mask,
                                           prune_by_magnitude, random_mask, unpack_mask)


def test_erk_density_hand_computed():
    # total 108 weights, density 0.5 -> 54 kept. Raw scores: a 6/8, b 20/100; scale 54/26 makes a's density
    # 1.56 > 1, so a is dense; then b keeps 54 - 8 = 46 of 100.
    densities = erk_density({'a': torch.Size([4, 2]), 'b': torch.Size([10, 10])}, 0.5)
    assert densities['a'] == 1.0
    assert densities['b'] == pytest.approx(0.46)
    # No layer saturates: densities proportional to sum/prod, weighted total equals the target.
    shapes = {'c': torch.Size([20, 20]), 'd': torch.Size([40, 20])}
    densities = erk_density(shapes, 0.1)
    assert densities['c'] / densities['d'] == pytest.approx((40 / 400) / (60 / 800))
    assert (densities['c'] * 400 + densities['d'] * 800) / 1200 == pytest.approx(0.1)
    assert uniform_density(shapes, 0.3) == {'c': 0.3, 'd': 0.3}


def test_snip_density_global_threshold():
    scores = {'a': torch.tensor([1., 2., 3., 4.]), 'b': torch.tensor([5., 6., 0.5, 7.]), 'c': torch.tensor([8.])}
    # keep int(9 * 0.5) = 4 of 9 highest scores: 5, 6, 7, 8
    assert snip_density(scores, 0.5) == {'a': 0.0, 'b': 0.75, 'c': 1.0}
    # keep int(10 * 0.6) = 6: the 3 positive scores, then 3 of the 7 tied zeros, shared 4 : 3
    scores = {'a': torch.tensor([0., 0., 0., 0., 2.]), 'b': torch.tensor([0., 1., 0., 0., 3.])}
    densities = snip_density(scores, 0.6)
    assert densities['a'] == pytest.approx((1 + 3 * 4 / 7) / 5)
    assert densities['b'] == pytest.approx((2 + 3 * 3 / 7) / 5)


@pytest.mark.parametrize('density', [0.05, 0.4, 0.6, 0.999])
def test_random_mask_has_exact_count(density):
    shape = torch.Size([7, 1, 13, 5])
    mask = random_mask(shape, density, torch.Generator().manual_seed(1))
    assert mask.dtype == torch.bool and mask.shape == shape
    assert abs(int(mask.sum()) - density * shape.numel()) <= 0.5
    assert torch.equal(mask, random_mask(shape, density, torch.Generator().manual_seed(1)))


def test_prune_by_magnitude_removes_smallest_active():
    weight = torch.tensor([[0.5, -0.1, 0.0, 2.0], [-0.3, 0.05, 1.0, -4.0]])
    mask = torch.tensor([[True, True, False, True], [True, False, True, True]])
    # active magnitudes: 0.5, 0.1, 2.0, 0.3, 1.0, 4.0 -> the two smallest are 0.1 and 0.3;
    # the inactive 0.0 and 0.05 are not candidates.
    expected = torch.tensor([[True, False, False, True], [False, False, True, True]])
    assert torch.equal(prune_by_magnitude(mask, weight, 2), expected)


def test_gradient_and_momentum_growth_pick_largest_inactive():
    mask = torch.tensor([True, False, False, True, False, False])
    weight = nn.Parameter(torch.zeros(6))
    weight.grad = torch.tensor([9.0, 0.2, -3.0, 8.0, 1.0, -0.5])
    # inactive candidates: |0.2|, |-3|, |1|, |-0.5| -> top two are positions 2 and 4
    scores = growth_scores('gradient', weight, {}, torch.Generator())
    assert torch.equal(grow(mask, 2, scores), torch.tensor([True, False, True, True, True, False]))
    state = dict(exp_avg=torch.tensor([0.0, -5.0, 0.1, 0.0, 0.2, 4.0]))
    scores = growth_scores('momentum', weight, state, torch.Generator())
    assert torch.equal(grow(mask, 2, scores), torch.tensor([True, True, False, True, False, True]))
    with pytest.raises(RuntimeError, match='first moment'):
        growth_scores('momentum', weight, {}, torch.Generator())


def test_random_growth_picks_only_inactive_positions():
    mask = random_mask(torch.Size([50, 20]), 0.6, torch.Generator().manual_seed(3))
    scores = growth_scores('random', nn.Parameter(torch.zeros(50, 20)), {}, torch.Generator().manual_seed(4))
    grown = grow(mask, 150, scores)
    assert int(grown.sum()) == int(mask.sum()) + 150
    assert torch.equal(grown & mask, mask)


def test_cosine_prune_rate_matches_official_cosine_decay():
    """The official CosineDecay is an SGD learning rate under CosineAnnealingLR(T_max, eta_min=0.005)."""
    total = 37
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total, eta_min=0.005)
    for step in range(1, total + 1):
        optimizer.step()
        scheduler.step()
        assert cosine_prune_rate(step, total, 0.5, 0.005) == pytest.approx(optimizer.param_groups[0]['lr'])
    assert cosine_prune_rate(0, 10, 0.3, 0.0) == 0.3
    assert cosine_prune_rate(5, 10, 0.3, 0.0) == pytest.approx(0.15)
    assert cosine_prune_rate(10, 10, 0.3, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize('shape', [(1, ), (7, ), (8, ), (3, 1, 13, 5)])
def test_pack_mask_round_trip(shape, tmp_path):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(5)) > 0.5
    packed = pack_mask(mask)
    assert packed['bits'].dtype == torch.uint8 and packed['bits'].numel() == math.ceil(mask.numel() / 8)
    torch.save(packed, tmp_path / 'mask.pth')
    assert torch.equal(unpack_mask(torch.load(tmp_path / 'mask.pth', weights_only=True)), mask)
