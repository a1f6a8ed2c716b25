"""Build and install mmslak, compiling the C++ CPU kernels of ``mmslak.ops`` into ``mmslak._ext``.

The extension needs torch at build time, so install with ``pip install --no-build-isolation -e .``
(``tools/install.sh`` does this). ``MMSLAK_NO_EXT=1`` skips the extension; the ops then fall back to
PyTorch and say so.

What is built depends on the machine and the compiler (GCC or clang, ``CC``/``CXX`` are honoured):

* always: the bindings, the runtime (instruction-set choice, torch's thread pool) and the peripheral
  kernels (``csrc/*.cpp``), and the portable depthwise kernels (``csrc/dwconv_generic.cpp``: vector
  extensions, NEON on aarch64);
* on x86-64, each of the AVX2, AVX-512 and AVX-512 + BF16 depthwise kernels (``csrc/x86/``) that the
  compiler can compile, each file with its own ``-m`` flags; the CPU picks one at run time, so the binary
  stays portable (no ``-march=native``);
* OpenMP when the compiler accepts it: torch's ``at::parallel_for`` is only parallel in code compiled
  with OpenMP when torch itself uses OpenMP (pip wheels do). Without it (Apple clang) the kernels run on
  one thread, and the build says so.
"""
import os
import platform
import re
import tempfile
from glob import glob

from setuptools import find_packages, setup

CSRC = os.path.join('mmslak', 'ops', 'csrc')
_AVX512 = ['-mavx512f', '-mavx512dq', '-mavx512vl', '-mavx512bw', '-mavx2', '-mfma']
# Depthwise kernel builds: (source, compiler flags, macro telling the bindings the build exists,
# a statement the compiler must accept with those flags).
_GENERIC_KERNELS = ('dwconv_generic.cpp', ['-ffp-contract=fast'], None, '')
_X86_KERNELS = [
    ('x86/dwconv_avx2.cpp', ['-mavx2', '-mfma'], 'MMSLAK_WITH_AVX2',
     '_mm256_fmadd_ps(_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());'),
    ('x86/dwconv_avx512.cpp', _AVX512, 'MMSLAK_WITH_AVX512',
     '_mm256_maskz_loadu_epi16(1, nullptr); _mm512_setzero_ps();'),
    ('x86/dwconv_avx512bf16.cpp', _AVX512 + ['-mavx512bf16'], 'MMSLAK_WITH_AVX512BF16',
     '_mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)_mm512_setzero_si512(), '
     '(__m512bh)_mm512_setzero_si512());'),
]
_KERNEL_FLAGS = ['-O3', '-std=c++17']


def read_version():
    with open(os.path.join('mmslak', '__init__.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def _is_x86_64():
    return platform.machine().lower() in ('x86_64', 'amd64')


def _compiles(compiler, code, flags, link=False):
    """Whether ``compiler`` compiles (and links, when asked) ``code`` with ``flags``."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, 'probe.cpp')
        with open(source, 'w') as f:
            f.write(code)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=flags)
            if link:
                compiler.link_shared_object(objects, os.path.join(tmp, 'probe.so'), extra_postargs=flags)
        except Exception:  # distutils raises CompileError / LinkError (module differs across versions)
            return False
    return True


def extensions():
    if os.environ.get('MMSLAK_NO_EXT') == '1':
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    class BuildKernels(BuildExtension):
        """Compiles each depthwise kernel build with its own flags before the extension itself."""

        def build_extensions(self):
            ext = self.extensions[0]
            kernels = [_GENERIC_KERNELS] + (_X86_KERNELS if _is_x86_64() else [])
            for source, flags, macro, probe in kernels:
                if probe and not _compiles(self.compiler, f'#include <immintrin.h>\nvoid probe() {{ {probe} }}\n',
                                           _KERNEL_FLAGS + flags):
                    print(f'mmslak._ext: the compiler cannot build {source} ({" ".join(flags)}); '
                          'CPUs that support it use a narrower kernel build')
                    continue
                ext.extra_objects += self.compiler.compile(
                    [os.path.join(CSRC, source)], output_dir=self.build_temp,
                    extra_postargs=_KERNEL_FLAGS + ['-fPIC'] + flags)
                if macro:
                    ext.extra_compile_args.append(f'-D{macro}')
            openmp = ['-fopenmp']
            if _compiles(self.compiler, '#include <omp.h>\nint probe() { return omp_get_max_threads(); }\n',
                         openmp, link=True):
                ext.extra_compile_args += openmp
                ext.extra_link_args += openmp
            else:
                print('mmslak._ext: the compiler has no OpenMP (-fopenmp); torch.set_num_threads has no '
                      'effect on the C++ kernels, which run on one thread unless torch uses its native '
                      'thread pool')
            super().build_extensions()

    sources = sorted(set(glob(os.path.join(CSRC, '*.cpp'))) -
                     {os.path.join(CSRC, _GENERIC_KERNELS[0])})
    ext = CppExtension(name='mmslak._ext', sources=sources, extra_compile_args=['-O3', '-std=c++20'])
    return [ext], {'build_ext': BuildKernels.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()

setup(
    name='mmslak',
    version=read_version(),
    description='SLaK and PeLK large-kernel ConvNets for MMDetection, MMSegmentation and MMPretrain',
    packages=find_packages(include=['mmslak', 'mmslak.*']),
    python_requires='>=3.8',
    install_requires=['torch>=2.1', 'mmengine>=0.10', 'mmcv>=2.0.0,<2.2.0'],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False)
