"""Ahead-of-time compile inspection, without a GPU: the launches captured (``cases``), compiled per target and read
from the binaries (``compilation``, ``sass_loop``, ``triton_internals``), a plain Triton matmul to compare against
(``reference_gemm``), and the tables and figures made of it (``tables``, ``figures``)."""
