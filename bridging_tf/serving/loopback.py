"""Old name of :mod:`bridging_tf.serving.dev_server` (the development TF Serving stand-in).

Kept only so that ``python -m bridging_tf.serving.loopback --base=...`` keeps
working; import :class:`~bridging_tf.serving.dev_server.DevServer` from
``bridging_tf.serving.dev_server`` instead. Not part of the public API.
"""

from bridging_tf.serving.dev_server import DevGrpcServer as LoopbackGrpcServer  # noqa: F401
from bridging_tf.serving.dev_server import DevServer as LoopbackServer  # noqa: F401
from bridging_tf.serving.dev_server import main

if __name__ == "__main__":
    raise SystemExit(main())
