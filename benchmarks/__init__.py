"""Measurements of the lab (run as scripts: python benchmarks/<name>.py --help)."""
