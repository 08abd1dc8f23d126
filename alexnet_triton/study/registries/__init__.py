"""The study's registries, what every other part reads: the layer kinds (``layer_kinds.KINDS``: costs, inputs,
functions and GPU-check parts per kind, and the study's layer list), the providers (``providers.PROVIDERS``: who
computes a number), the GPUs (``gpus.GPUS``: peaks, bandwidth, target, SMs) and the benchmark cases
(``benchmark_cases``: dtypes, layouts, plans, the CSV columns and their reader)."""
