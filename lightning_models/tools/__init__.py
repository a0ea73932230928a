"""The lab's command-line tools, each run as ``python -m lightning_models.tools.<name>``:
``predict`` (classify images with a checkpoint), ``sweep_table`` (a sweep's table),
``reproduce`` (the reports' rows, and REPRODUCTION.md from their results)."""
