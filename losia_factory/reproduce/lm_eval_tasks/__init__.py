"""lm-evaluation-harness tasks of the reproduction kit (passed to lm-eval with ``--include_path``)."""
