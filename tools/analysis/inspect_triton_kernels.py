"""Compile every Triton kernel of mmslak.ops ahead of time for a GPU architecture and summarise its SASS.

No GPU is needed: ``triton.compile`` with a ``GPUTarget`` produces the cubin, and the cuobjdump shipped
with triton disassembles it. One line per kernel configuration (the configurations the wrappers launch
for SLaK-T's and PeLK's layers)::

    NAME regs=R spills=S mma=M ffma=F ldg=L lds=D

``regs`` registers per thread (cuobjdump's resource usage), ``spills`` local-memory loads and stores in
the SASS (LDL/STL), ``mma`` tensor-core instructions (HMMA, HGMMA), ``ffma`` fp32 fused multiply-adds,
``ldg`` global loads (LDG, LDGSTS), ``lds`` shared-memory loads (LDS, LDSM). Instruction counts are
static (instructions in the code, not executions). With ``--check`` the tool exits 1 unless every
band (tensor-core) kernel has tensor-core instructions and no spills.

Examples:
    python tools/analysis/inspect_triton_kernels.py --arch 90
    python tools/analysis/inspect_triton_kernels.py --arch 80 --only band --check
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from typing import NamedTuple

# Compile for the GPU, never for the interpreter (tests set TRITON_INTERPRET=1), and before triton is
# imported: it reads the variable once.
os.environ.pop('TRITON_INTERPRET', None)

import torch  # noqa: E402

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp64': torch.float64}
SASS_GROUPS = {
    'mma': re.compile(r'\b(HMMA|HGMMA)\b'),
    'ffma': re.compile(r'\bFFMA\b'),
    'ldg': re.compile(r'\b(LDG|LDGSTS)\b'),
    'lds': re.compile(r'\b(LDS|LDSM)\b'),
    'spills': re.compile(r'\b(LDL|STL)\b'),
}


class KernelConfig(NamedTuple):
    """One compilation: ``constants`` holds the constexpr arguments and the integer arguments the
    wrappers pass as 1 (unit strides of NCHW planes: triton's launch-time specialisation makes them
    constants too); pointers are ``*dtype`` unless ``pointer_types`` says otherwise."""
    name: str
    fn: object
    dtype: str
    constants: dict
    is_band: bool
    pointer_types: dict = {}
    num_warps: int = 4


def kernel_configs(dtype_names):
    """The configurations the wrappers launch for SLaK-T's and PeLK's layers, per dtype."""
    from mmslak.ops.triton import band_kernels, dwconv, kernels, peripheral, peripheral_kernels
    configs = []
    for dtype_name in dtype_names:
        dtype = DTYPES[dtype_name]
        # SLaK-T stage 1 at 512x512 (decomposed 51x5 + 5x51 with the 5x5 folded in), stage 3 at
        # 224x224 (14x14 map), PeLK's dense 51x51 and 101x101 kernels on a 56x56 map.
        band_shapes = [('slak-s1-512', (4, 124, 128, 128), [(51, 5), (5, 51)]),
                       ('slak-s3-224', (64, 499, 14, 14), [(47, 5), (5, 47)]),
                       ('pelk-dense51', (64, 47, 56, 56), [(51, 51)]),
                       ('pelk-dense101', (64, 47, 56, 56), [(101, 101)])]
        for label, shape, kernel_shapes in band_shapes if dtype in dwconv.BAND_DTYPES else []:
            x = torch.empty(shape, dtype=dtype, device='meta')
            weights = [torch.empty(shape[1], 1, *k, dtype=dtype, device='meta') for k in kernel_shapes]
            assert dwconv.uses_band(x, weights), (label, dtype_name)
            tile_h, tile_w, chunk = dwconv.band_forward_config(x)
            long_h = [dwconv.is_long_along_h(w) for w in weights]
            configs.append(KernelConfig(
                f'band_forward[{label},{dtype_name}]', band_kernels.band_forward_kernel, dtype_name,
                dict(stride_xw=1, stride_yw=1, HAS_LONG_H=any(long_h), HAS_LONG_W=not all(long_h),
                     HAS_BIAS=True, PRECISION=dwconv.dot_precision(dtype), BH=tile_h, BW=tile_w,
                     BK=chunk), True))
            for weight in weights:
                tile, rows, taps, reduce_chunk, num_warps = dwconv.band_weight_grad_config(weight, x)
                kh, kw = weight.shape[2:]
                # W, the unit-stride axis of NCHW, is the short (reduced) axis of a kernel long along
                # H, and the long axis of the transposed planes of one long along W.
                unit = ('stride_gs', 'stride_xs') if dwconv.is_long_along_h(weight) else ('stride_gl',
                                                                                         'stride_xl')
                configs.append(KernelConfig(
                    f'band_weight_grad[{label},{kh}x{kw},{dtype_name}]',
                    band_kernels.band_weight_grad_kernel, dtype_name,
                    dict({name: 1 for name in unit}, PRECISION=dwconv.dot_precision(dtype), BT=tile, BQ=rows,
                         BKP=taps, BC=reduce_chunk), True, num_warps=num_warps))
        accumulator = dwconv.accumulator_dtype(dtype)
        for label, memory_format in [('nchw-7x7', torch.contiguous_format), ('cl-7x7', torch.channels_last)]:
            x = torch.empty(64, 998, 7, 7).to(memory_format=memory_format)
            block_c, block_p = dwconv.direct_forward_tile(x)
            configs.append(KernelConfig(
                f'direct_forward[{label},{dtype_name}]', kernels.dwconv_forward_kernel, dtype_name,
                dict(NUM_BRANCHES=3, HAS_BIAS=True, ACC_DTYPE=accumulator, BLOCK_C=block_c,
                     BLOCK_P=block_p), False))
        configs.append(KernelConfig(
            f'direct_weight_grad[{dtype_name}]', kernels.dwconv_weight_grad_kernel, dtype_name,
            dict(ACC_DTYPE=accumulator, BLOCK_T=dwconv.WEIGHT_GRAD_BLOCK_TAPS,
                 BLOCK_P=dwconv.WEIGHT_GRAD_TILE // dwconv.WEIGHT_GRAD_BLOCK_TAPS), False))
        # The peripheral kernels keep their intermediates in the accumulator dtype (fp32 here).
        configs += [
            KernelConfig(f'peripheral_row_box[{dtype_name}]', peripheral_kernels.row_box_kernel, dtype_name,
                         dict(MIX=True, ACC_DTYPE=dwconv.accumulator_dtype(dtype), BLOCK_CELLS=16,
                              BLOCK_Q=peripheral.BLOCK_Q), False,
                         dict(offsets_ptr='*i32', out_ptr='*fp32')),
            KernelConfig(f'peripheral_col_box[{dtype_name}]', peripheral_kernels.col_box_kernel, dtype_name,
                         dict(SUM=True, HAS_BIAS=True, ACC_DTYPE=dwconv.accumulator_dtype(dtype),
                              BLOCK_Q=peripheral.BLOCK_Q), False, dict(t_ptr='*fp32', offsets_ptr='*i32')),
        ]
    configs.append(KernelConfig(
        'peripheral_grad_weight[fp32]', peripheral_kernels.grad_weight_kernel, 'fp32',
        dict(ACC_DTYPE=dwconv.accumulator_dtype(torch.float32), BLOCK_CELLS=16,
             BLOCK_P=peripheral.GRAD_WEIGHT_BLOCK_P), False))
    return configs


def compile_kernel(config, arch):
    """Compile a :class:`KernelConfig` for ``sm_{arch}``; the cubin is in ``asm``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = config.fn
    signature = {}
    for name in fn.arg_names:
        if name in config.constants:
            signature[name] = 'constexpr'
        elif name.endswith('_ptr'):
            signature[name] = config.pointer_types.get(name, '*' + config.dtype)
        else:
            signature[name] = 'i32'
    # 16-byte aligned pointers, as torch allocates them (triton specialises on this at launch).
    attrs = {(index, ): [['tt.divisibility', 16]] for index, name in enumerate(fn.arg_names)
             if name.endswith('_ptr')}
    constants = {(fn.arg_names.index(name), ): value for name, value in config.constants.items()}
    return triton.compile(ASTSource(fn, signature, constants, attrs), target=GPUTarget('cuda', arch, 32),
                          options={'num_warps': config.num_warps})


def sass_summary(cubin):
    """{'regs', 'spills', 'mma', 'ffma', 'ldg', 'lds'} of one cubin."""
    from triton import knobs
    with tempfile.NamedTemporaryFile(suffix='.cubin') as file:
        file.write(cubin)
        file.flush()
        sass = subprocess.run([knobs.nvidia.cuobjdump.path, '-sass', file.name], check=True,
                              capture_output=True, text=True).stdout
        usage = subprocess.run([knobs.nvidia.cuobjdump.path, '-res-usage', file.name], check=True,
                               capture_output=True, text=True).stdout
    registers = re.search(r'REG:(\d+)', usage)
    summary = {'regs': int(registers.group(1)) if registers else -1}
    instructions = [line for line in sass.splitlines() if re.match(r'\s+/\*[0-9a-f]{4}\*/', line)]
    for key, pattern in SASS_GROUPS.items():
        summary[key] = sum(1 for line in instructions if pattern.search(line))
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', type=int, default=90, help='compute capability, e.g. 80 (A100), 90 (H100)')
    parser.add_argument('--dtype', default='fp32,bf16,fp16',
                        help='comma-separated: fp32, bf16, fp16, fp64 (fp64: direct kernels only)')
    parser.add_argument('--only', default='', help='only the kernels whose name contains this text')
    parser.add_argument('--check', action='store_true',
                        help='exit 1 unless every band kernel has tensor-core instructions and no spills')
    args = parser.parse_args()
    dtype_names = [name.strip() for name in args.dtype.split(',') if name.strip()]
    unknown = sorted(set(dtype_names) - set(DTYPES))
    if unknown or not dtype_names:
        parser.exit(2, f'error: --dtype takes {", ".join(DTYPES)} (comma-separated), got {args.dtype!r}\n')
    try:
        import triton
    except ImportError:
        parser.exit(2, 'error: triton is not installed (it ships with the CUDA builds of torch)\n')
    configs = [config for config in kernel_configs(dtype_names) if args.only in config.name]
    print(f'triton {triton.__version__}, sm_{args.arch}, {len(configs)} kernel configurations', flush=True)
    failures = []
    for config in configs:
        summary = sass_summary(compile_kernel(config, args.arch).asm['cubin'])
        print(f'{config.name} ' + ' '.join(f'{key}={summary[key]}' for key in
                                           ('regs', 'spills', 'mma', 'ffma', 'ldg', 'lds'))
              + f' warps={config.num_warps}', flush=True)
        if config.is_band and (summary['mma'] == 0 or summary['spills'] > 0):
            failures.append(config.name)
    if args.check and failures:
        print(f'band kernels without tensor-core instructions or with spills: {", ".join(failures)}')
        sys.exit(1)


if __name__ == '__main__':
    main()
