"""The GPU benchmarks: the timing harness and its CLI (``benchmark``) and the correctness check run before it on the
same GPU (``gpu_check``)."""
