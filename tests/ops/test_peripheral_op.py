"""mmslak.ops.peripheral_depthwise_conv2d against the dense convolution with the expanded kernel."""
import random
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmslak.ops import expand_peripheral_kernel, peripheral_depthwise_conv2d
from mmslak.ops.dispatch import BACKEND_ENV_VAR
from mmslak.ops.peripheral import PERIPHERAL_BACKENDS

# Grids printed in the PeLK paper (DESIGN.md section 2) and small ones that fit tiny images.
GRID_31 = [7, 4, 2, 1, 1, 1, 1, 1, 2, 4, 7]
GRID_51 = [9, 8, 4, 2, 1, 1, 1, 1, 1, 2, 4, 8, 9]
GRID_101 = [17, 16, 8, 4, 2, 1, 1, 1, 1, 1, 1, 1, 2, 4, 8, 16, 17]
SMALL_GRIDS = [[1], [3], [2, 1], [1, 1, 1], [3, 1, 1, 4], [2, 1, 1, 1, 2]]


def _backends():
    """CPU backends of the op, skipped with the loader's reason when one is not built."""
    params = []
    for name in ('cpp', 'torch'):
        try:
            PERIPHERAL_BACKENDS[name]()
            marks = ()
        except ImportError as error:
            marks = pytest.mark.skip(reason=f'{name} backend unavailable: {error}')
        params.append(pytest.param(name, marks=marks))
    return params


@pytest.fixture(params=_backends())
def backend(request, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, request.param)
    return request.param


def dense_reference(x, weight, grid, bias=None):
    return F.conv2d(x, expand_peripheral_kernel(weight, grid), bias, padding=sum(grid) // 2,
                    groups=x.shape[1])


def random_grid(rng, max_cells=7, max_width=5):
    while True:
        grid = [rng.randint(1, max_width) for _ in range(rng.randint(1, max_cells))]
        if sum(grid) % 2 == 1:
            return grid


def assert_float32_close(actual, expected):
    """Float32 precision relative to the magnitude of the result (sums of up to K² products)."""
    scale = expected.abs().max().item() + 1e-30
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=2e-6 * scale)


# ------------------------------------------------------------------------------ expansion and input checks


def test_expand_peripheral_kernel_by_hand():
    weight = torch.tensor([[1., 2.], [3., 4.]]).view(1, 1, 2, 2)
    expected = torch.tensor([[1., 1., 2.], [1., 1., 2.], [3., 3., 4.]]).view(1, 1, 3, 3)
    assert torch.equal(expand_peripheral_kernel(weight, [2, 1]), expected)


def test_shapes_only_forward_on_the_meta_device():
    """A forward on meta tensors (get_flops.py counts that way) gives the shapes and reads no value back."""
    x = torch.empty(2, 6, 12, 10, device='meta')
    weight = torch.empty(6, 1, 3, 3, device='meta')
    assert expand_peripheral_kernel(weight, [2, 1, 2]).shape == (6, 1, 5, 5)
    assert peripheral_depthwise_conv2d(x, weight, [2, 1, 2], torch.empty(6, device='meta')).shape == x.shape


def test_expand_51_grid_cell_positions():
    weight = torch.arange(13 * 13, dtype=torch.float32).view(1, 1, 13, 13)
    dense = expand_peripheral_kernel(weight, GRID_51)
    assert dense.shape == (1, 1, 51, 51)
    # Rows 0..8 are cell 0, rows 17..20 cell 2, the centre row 25 is cell 6 (the middle width-1 cell).
    assert dense[0, 0, 8, 25] == weight[0, 0, 0, 6]
    assert dense[0, 0, 9, 25] == weight[0, 0, 1, 6]
    assert dense[0, 0, 25, 25] == weight[0, 0, 6, 6]
    assert dense[0, 0, 50, 17] == weight[0, 0, 12, 2]


@pytest.mark.parametrize('grid, message', [
    ([2, 2], 'odd'),
    ([3, 0, 2], 'positive'),
    ([3, -1, 1], 'positive'),
    ([], 'at least one cell'),
    ([1.5, 1.5, 1], 'integers'),
])
def test_bad_grid_raises(grid, message):
    weight = torch.randn(2, 1, max(len(grid), 1), max(len(grid), 1))
    with pytest.raises(ValueError, match=message):
        peripheral_depthwise_conv2d(torch.randn(1, 2, 5, 5), weight, grid)


def test_bad_inputs_raise():
    x, weight = torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3)
    with pytest.raises(ValueError, match='one width per row'):
        peripheral_depthwise_conv2d(x, weight, [1, 1, 1, 2, 2])
    with pytest.raises(ValueError, match='4-D'):
        peripheral_depthwise_conv2d(x[0], weight, [1, 1, 1])
    with pytest.raises(ValueError, match='floating-point'):
        peripheral_depthwise_conv2d(x.long(), weight.long(), [1, 1, 1])
    with pytest.raises(ValueError, match='channels'):
        peripheral_depthwise_conv2d(x, torch.randn(3, 1, 3, 3), [1, 1, 1])
    with pytest.raises(ValueError, match=r"\(C, 1, k', k'\)"):
        peripheral_depthwise_conv2d(x, torch.randn(2, 1, 3, 5), [1, 1, 1])
    with pytest.raises(ValueError, match='dtype and device'):
        peripheral_depthwise_conv2d(x, weight.double(), [1, 1, 1])
    with pytest.raises(ValueError, match='bias'):
        peripheral_depthwise_conv2d(x, weight, [1, 1, 1], torch.randn(3))
    with pytest.raises(ValueError, match='one width per row'):
        expand_peripheral_kernel(weight, [2, 1])


# ------------------------------------------------------------------------------ forward


@pytest.mark.parametrize('grid, size', [
    (GRID_51, (56, 56)),
    (GRID_51, (14, 14)),  # image smaller than the kernel: most cells read only padding
    (GRID_31, (9, 23)),
    (GRID_101, (20, 17)),
    ([1], (4, 5)),
    ([3, 1, 1, 4], (1, 7)),  # a single row
    ([2, 1, 1, 1, 2], (6, 1)),  # a single column
])
def test_forward_matches_dense_float32(backend, grid, size):
    torch.manual_seed(0)
    cells = len(grid)
    x = torch.randn(2, 5, *size) + 0.5  # a non-zero mean, as after GELU, stresses long box sums
    weight, bias = torch.randn(5, 1, cells, cells), torch.randn(5)
    assert_float32_close(peripheral_depthwise_conv2d(x, weight, grid, bias),
                         dense_reference(x, weight, grid, bias))


@pytest.mark.parametrize('seed', range(6))
def test_forward_random_grids_float64(backend, seed):
    rng = random.Random(seed)
    grid = random_grid(rng)
    cells = len(grid)
    x = torch.randn(rng.randint(1, 2), rng.randint(1, 4), rng.randint(1, 12), rng.randint(1, 12),
                    dtype=torch.float64)
    weight = torch.randn(x.shape[1], 1, cells, cells, dtype=torch.float64)
    torch.testing.assert_close(peripheral_depthwise_conv2d(x, weight, grid),
                               dense_reference(x, weight, grid))


def test_channels_last_in_channels_last_out(backend):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 11, 13).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, 1, 11, 11)
    y = peripheral_depthwise_conv2d(x, weight, GRID_31)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_float32_close(y, dense_reference(x.contiguous(), weight, GRID_31))


# ------------------------------------------------------------------------------ backward


@pytest.mark.parametrize('grid, size', [(GRID_51, (30, 26)), (GRID_101, (12, 15)), ([3, 1, 1, 4], (1, 6))])
def test_gradients_match_dense_float32(backend, grid, size):
    torch.manual_seed(0)
    cells = len(grid)
    x = (torch.randn(2, 3, *size) + 0.5).requires_grad_()
    weight = torch.randn(3, 1, cells, cells, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    grad_out = torch.randn(2, 3, *size)
    ours = torch.autograd.grad(peripheral_depthwise_conv2d(x, weight, grid, bias), (x, weight, bias), grad_out)
    dense = torch.autograd.grad(dense_reference(x, weight, grid, bias), (x, weight, bias), grad_out)
    for actual, expected in zip(ours, dense):
        assert_float32_close(actual, expected)


@pytest.mark.parametrize('seed', range(4))
def test_gradients_random_grids_float64(backend, seed):
    rng = random.Random(100 + seed)
    grid = random_grid(rng)
    cells = len(grid)
    x = torch.randn(2, 3, rng.randint(1, 10), rng.randint(1, 10), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, cells, cells, dtype=torch.float64, requires_grad=True)
    x_last = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    grad_out = torch.randn(x.shape, dtype=torch.float64)
    dense = torch.autograd.grad(dense_reference(x, weight, grid), (x, weight), grad_out)
    for inp in (x, x_last):
        ours = torch.autograd.grad(peripheral_depthwise_conv2d(inp, weight, grid), (inp, weight), grad_out)
        for actual, expected in zip(ours, dense):
            torch.testing.assert_close(actual, expected)


def test_gradcheck(backend):
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: peripheral_depthwise_conv2d(t[0], t[1], [3, 1, 3], t[2]),
                                    (x, weight, bias))


def test_only_weight_gradient_requested(backend):
    x = torch.randn(1, 2, 7, 7)
    weight = torch.randn(2, 1, 3, 3, requires_grad=True)
    (grad_w, ) = torch.autograd.grad(peripheral_depthwise_conv2d(x, weight, [2, 1, 2]).sum(), weight)
    (expected, ) = torch.autograd.grad(dense_reference(x, weight, [2, 1, 2]).sum(), weight)
    assert_float32_close(grad_w, expected)


@pytest.mark.parametrize('isa', ['generic', 'avx2', 'avx512', 'avx512bf16'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_cpp_instruction_sets(monkeypatch, require_backend, isa, dtype):
    """MMSLAK_CPU_ISA runs a narrower build of the C++ kernels (e.g. the portable one on an AVX-512 CPU).
    bfloat16 is tested in every build by test_cpu_kernels.py."""
    require_backend(PERIPHERAL_BACKENDS, 'cpp')
    from mmslak.ops import cpu
    if isa not in cpu.runnable_isas():
        pytest.skip(f'this CPU runs {cpu.runnable_isas()}, not {isa}')
    monkeypatch.setenv(BACKEND_ENV_VAR, 'cpp')
    monkeypatch.setenv('MMSLAK_CPU_ISA', isa)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 19, 21, dtype=dtype, requires_grad=True)
    weight = torch.randn(3, 1, 11, 11, dtype=dtype, requires_grad=True)
    out = peripheral_depthwise_conv2d(x, weight, GRID_31)
    grad_out = torch.randn_like(out)
    ours = (out, *torch.autograd.grad(out, (x, weight), grad_out))
    expected = dense_reference(x, weight, GRID_31)
    dense = (expected, *torch.autograd.grad(expected, (x, weight), grad_out))
    for actual, reference in zip(ours, dense):
        if dtype == torch.float64:
            torch.testing.assert_close(actual, reference)
        else:
            assert_float32_close(actual, reference)


def test_float16_falls_back_to_torch(ran_backends):
    """The C++ kernels take float32, float64 and bfloat16; float16 runs through the PyTorch implementation."""
    torch.manual_seed(0)
    x, weight = torch.randn(1, 3, 9, 8), torch.randn(3, 1, 5, 5)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # the one-time fallback notice
        out = peripheral_depthwise_conv2d(x.half(), weight.half(), [2, 1, 1, 1, 2])
    assert out.dtype == torch.float16
    assert [choice.backend for choice in ran_backends] == ['torch']
    expected = dense_reference(x.half().float(), weight.half().float(), [2, 1, 1, 1, 2])
    torch.testing.assert_close(out.float(), expected, rtol=2e-3, atol=2e-3 * expected.abs().max().item())


def test_custom_op_registration():
    """Fake (meta) kernel, schema and autograd registration agree with the real kernels."""
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.mmslak.peripheral_dwconv2d.default, (x, weight, [1, 3, 1], bias))


def test_cpp_raw_op_checks_bias():
    """The extension's own op refuses a bias that is not (C,) instead of reading past it."""
    try:
        PERIPHERAL_BACKENDS['cpp']()
    except ImportError as error:
        pytest.skip(f'cpp backend unavailable: {error}')
    x, weight = torch.randn(1, 40, 8, 8), torch.randn(40, 1, 3, 3)
    with pytest.raises(RuntimeError, match=r'bias must be \(C,\) = \(40,\)'):
        torch.ops.mmslak_ext.peripheral_forward(x, weight, [3, 1, 3], torch.randn(1))
