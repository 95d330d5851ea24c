"""Pipeline steps with the TFX-style contract (no TFX).

Each module ``components/<step>.py`` has
``run(inputs: Mapping[str, Path], outputs: Mapping[str, Path], **params) -> dict``:
artifact directories in, artifact directories out, scalar parameters, a small
metrics dict back. See :mod:`components.base` for ``artifact.json``, atomic
writes and skipping. The steps: ``ingest`` -> ``train`` -> ``export`` /
``extract_bottleneck`` -> ``attack`` -> ``report``; the graph (which step reads
which artifact) is :func:`pipelines.pipeline.build`, walked by the local runner and
the KFP compiler alike.
"""
