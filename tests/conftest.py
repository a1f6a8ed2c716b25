import os

# Triton decides at its first import whether it runs kernels in its CPU interpreter. The Triton tests need it,
# and any test module may import triton first, so it is set before collection. It changes nothing else: CPU
# tensors only reach Triton when MMSLAK_DWCONV_BACKEND=triton forces it.
os.environ.setdefault('TRITON_INTERPRET', '1')
