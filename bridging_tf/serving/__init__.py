"""Clients for an encoder served by TF Serving (REST and gRPC).

- :class:`RestClient` — ``POST /v1/models/<name>[/versions/N]:predict`` in TF
  Serving's documented JSON (columnar ``inputs`` / ``outputs``);
- :class:`GrpcClient` — ``PredictionService/Predict`` via ``tensorflow-serving-api``;
- :func:`make_client` — picks one from the URL (``http://`` or ``grpc://``);

Both clients batch requests, give each request a total deadline (``timeout``:
connect, send and the whole answer; ``deadline`` bounds a whole call with its
retries), cap the answer's size (``max_response_bytes``), retry transient
failures (refused or reset connections, cut-short answers, timeouts,
5xx / 429 / UNAVAILABLE) a bounded number of times with exponential backoff,
and raise :class:`ServingError` with one line on every failure.

A development stand-in for ``tensorflow_model_server`` (127.0.0.1 only) is a test
helper, ``tests/dev_server.py`` (``python -m tests.dev_server`` from a clone); it is
not part of the package.

Example::

    client = make_client("http://localhost:8501", "biased_mnist_end")
    z = client.embed(images_uint8)            # [N, D] float32
"""

from bridging_tf.serving.client import GrpcClient, RestClient, ServingError, make_client, parse_url

__all__ = ["GrpcClient", "RestClient", "ServingError", "make_client", "parse_url"]
