"""Pipelines: the CLI (``python -m pipelines.run``), the pipeline definition, the KFP adapter."""
