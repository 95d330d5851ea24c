"""Import TensorFlow without its C++ start-up lines on stderr (entry points only).

TF 2.21 writes oneDNN / CUDA-stub notices to fd 2 at import regardless of
``TF_CPP_MIN_LOG_LEVEL``; a command whose user errors must be one line on
stderr imports TF through :func:`import_tensorflow_quietly` first. Set
``TF_CPP_MIN_LOG_LEVEL=0`` to see the notices.
"""

import os
import sys


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
        tf.config.list_physical_devices()  # the CUDA probe logs here, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
