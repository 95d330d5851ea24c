"""Clients for an encoder served by TF Serving (REST and gRPC), and a loopback server.

- :class:`RestClient` — ``POST /v1/models/<name>[/versions/N]:predict`` in TF
  Serving's documented JSON (columnar ``inputs`` / ``outputs``);
- :class:`GrpcClient` — ``PredictionService/Predict`` via ``tensorflow-serving-api``;
- :func:`make_client` — picks one from the URL (``http://`` or ``grpc://``);
- :class:`LoopbackServer` / :class:`LoopbackGrpcServer` — small 127.0.0.1-only
  servers answering the same REST / gRPC API from an exported SavedModel
  (tests, local demos; the real ``tensorflow_model_server`` is what production uses).

Both clients batch requests, time out, retry transient failures (down,
timeout, 5xx / UNAVAILABLE) a bounded number of times with exponential
backoff, and raise :class:`ServingError` with one line on failure.

Example::

    client = make_client("http://localhost:8501", "biased_mnist_end")
    z = client.embed(images_uint8)            # [N, D] float32
"""

from bridging_tf.serving.client import GrpcClient, RestClient, ServingError, make_client, parse_url
from bridging_tf.serving.loopback import LoopbackGrpcServer, LoopbackServer

__all__ = ["GrpcClient", "LoopbackGrpcServer", "LoopbackServer", "RestClient", "ServingError",
           "make_client",
           "parse_url"]
