"""The C++ extension compiles off x86 and with other compilers, against the installed torch's headers.

* aarch64: every portable source (``csrc/*.cpp``; ``csrc/x86/`` holds the x86-only kernel builds) is
  compiled by Debian's cross compiler ``aarch64-linux-gnu-g++`` (package ``g++-aarch64-linux-gnu``, which
  ``tools/install.sh`` installs when it runs as root with apt-get), without OpenMP, as setup.py builds
  it where the compiler has none. The portable depthwise kernels then use NEON through the compiler's
  vector extensions.
* clang: every source, with the instruction-set flags setup.py gives it, when ``clang++`` is installed.

The tests only compile (nothing links against an aarch64 libtorch here). A missing cross compiler skips
the aarch64 test with the reason, unless ``MMSLAK_REQUIRE_EXT=1`` (CI), where it fails. Each compiler
process is single-threaded, so all the compilations of this module start together, one per core at a time.
"""
import os
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

import mmslak

CSRC = Path(mmslak.__file__).parent / 'ops' / 'csrc'
PORTABLE_SOURCES = sorted(path.name for path in CSRC.glob('*.cpp'))
X86_FLAGS = {
    'x86/dwconv_avx2.cpp': ['-mavx2', '-mfma'],
    'x86/dwconv_avx512.cpp': ['-mavx512f', '-mavx512dq', '-mavx512vl', '-mavx512bw', '-mavx2', '-mfma'],
    'x86/dwconv_avx512bf16.cpp': ['-mavx512f', '-mavx512dq', '-mavx512vl', '-mavx512bw', '-mavx2', '-mfma',
                                  '-mavx512bf16'],
}
CROSS_COMPILER = 'aarch64-linux-gnu-g++'
# What tests/ops/conftest.py reads to turn a missing extension into a failure (CI sets it).
REQUIRE_EXT_ENV_VAR = 'MMSLAK_REQUIRE_EXT'


def _compile(compiler, source, out_dir, flags=()):
    """Compile ``csrc/<source>`` to ``out_dir/<stem>.o``; return the completed process."""
    includes = [f'-I{path}' for path in [*include_paths(), sysconfig.get_paths()['include']]]
    command = [compiler, '-std=c++20', '-O1', '-fPIC', '-c', str(CSRC / source), '-o',
               str(out_dir / (Path(source).stem + '.o')), '-DTORCH_EXTENSION_NAME=_ext',
               '-DTORCH_API_INCLUDE_EXTENSION_H', *includes, *flags]
    return subprocess.run(command, capture_output=True, text=True)


# What each test compiles: compiler -> sources.
COMPILATIONS = {CROSS_COMPILER: PORTABLE_SOURCES, 'clang++': PORTABLE_SOURCES + sorted(X86_FLAGS)}


@pytest.fixture(scope='module')
def compilations(tmp_path_factory):
    """(compiler, source) -> (future of the completed process, output directory), for every installed
    compiler; all started at the first use."""
    jobs = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        for compiler, sources in COMPILATIONS.items():
            if shutil.which(compiler) is None:
                continue
            for source in sources:
                out_dir = tmp_path_factory.mktemp(Path(source).stem)
                jobs[compiler, source] = (
                    pool.submit(_compile, compiler, source, out_dir, X86_FLAGS.get(source, [])), out_dir)
        yield jobs


def _compiler_or_skip(name, package):
    if shutil.which(name) is None:
        reason = f'{name} is not installed (Debian package {package})'
        required = os.environ.get(REQUIRE_EXT_ENV_VAR, '').strip().lower() in ('1', 'true', 'yes', 'on')
        if name == CROSS_COMPILER and required:
            pytest.fail(f'{REQUIRE_EXT_ENV_VAR}=1 but {reason}: tools/install.sh installs it as root')
        pytest.skip(reason)


@pytest.mark.slow
@pytest.mark.parametrize('source', PORTABLE_SOURCES)
def test_portable_sources_cross_compile_for_aarch64(source, compilations):
    _compiler_or_skip(CROSS_COMPILER, 'g++-aarch64-linux-gnu')
    future, out_dir = compilations[CROSS_COMPILER, source]
    result = future.result()
    assert result.returncode == 0, f'{source} does not compile for aarch64:\n{result.stderr[-3000:]}'
    # The portable kernels must not be empty on aarch64: forward and backward of each dtype.
    if source == 'dwconv_generic.cpp':
        symbols = subprocess.run(['aarch64-linux-gnu-nm', '-C', str(out_dir / 'dwconv_generic.o')],
                                 capture_output=True, text=True).stdout
        for dtype in ('float', 'double', 'mmslak::cpu::BFloat16'):
            assert f'mmslak::dwconv::generic::forward<{dtype}>' in symbols
            assert f'mmslak::dwconv::generic::backward<{dtype}>' in symbols


@pytest.mark.slow
@pytest.mark.parametrize('source', PORTABLE_SOURCES + sorted(X86_FLAGS))
def test_sources_compile_with_clang(source, compilations):
    """Without OpenMP, as setup.py builds with a clang that has none (Apple's)."""
    _compiler_or_skip('clang++', 'clang')
    result = compilations['clang++', source][0].result()
    assert result.returncode == 0, f'{source} does not compile with clang:\n{result.stderr[-3000:]}'
