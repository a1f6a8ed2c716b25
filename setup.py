"""Build and install mmslak, compiling the C++ CPU kernels of ``mmslak.ops`` into ``mmslak._ext``.

The extension needs torch at build time, so install with ``pip install --no-build-isolation -e .``
(``tools/install.sh`` does this). ``MMSLAK_NO_EXT=1`` skips the extension; the ops then fall back to
PyTorch and say so.
"""
import os
import re
from glob import glob

from setuptools import find_packages, setup


def read_version():
    with open(os.path.join('mmslak', '__init__.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def extensions():
    sources = sorted(glob(os.path.join('mmslak', 'ops', 'csrc', '*.cpp')))
    if not sources or os.environ.get('MMSLAK_NO_EXT') == '1':
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension
    # Kernels for AVX-512 and AVX2 are compiled per function with target attributes and picked at run
    # time from the CPU's features, so the binary stays portable: no -march=native here.
    ext = CppExtension(
        name='mmslak._ext',
        sources=sources,
        extra_compile_args=['-O3', '-fopenmp', '-std=c++20'],
        extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': BuildExtension.with_options(use_ninja=True)}


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
