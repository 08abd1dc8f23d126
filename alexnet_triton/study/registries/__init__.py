"""The study's registries, what every other part reads: the layer kinds (``layer_kinds.KINDS``: costs, inputs and
functions per kind, and the study's layer list), the providers (``providers.PROVIDERS``: who computes a number) and
the benchmark cases (``benchmark_cases``: dtypes, layouts, plans, the CSV columns and their reader)."""
