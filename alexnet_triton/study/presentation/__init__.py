"""What the study shows: the benchmark figures and summary (``benchmark_plots``) and reports/README.md
(``report``)."""
