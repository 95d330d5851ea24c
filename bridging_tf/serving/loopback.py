"""A loopback stand-in for ``tensorflow_model_server`` (REST, optionally gRPC).

Serves every ``<base>/<model_name>/<version>/`` SavedModel with TF Serving's
REST API on 127.0.0.1 only: ``POST /v1/models/<name>[/versions/N]:predict``
(columnar ``inputs`` or row ``instances``; answers ``outputs`` or
``predictions``; errors as ``{"error": ...}``) and ``GET /v1/models/<name>``.
Bounded: request bodies over ``max_body_bytes`` are refused, sockets time out.
Fault injection for tests: ``delay_s`` (slow answers), ``fail_first`` (that
many HTTP 503s first), ``truncate_rows`` (answers with too few rows).

Example::

    with LoopbackServer("runs/x/serving") as server:
        client = RestClient(server.url, "biased_mnist_end")
        z = client.embed(images)

    python -m bridging_tf.serving.loopback --base=runs/x/serving --port=8501
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import numpy as np

_PREDICT = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")
_STATUS = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?$")


class _Models:
    """Lazily loaded SavedModels ``name -> {version: loaded}``."""

    def __init__(self, base):
        self.base = Path(base)
        self._cache = {}
        self._lock = threading.Lock()

    def versions(self, name):
        d = self.base / name
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []

    def get(self, name, version=None):
        import tensorflow as tf
        versions = self.versions(name)
        if not versions:
            raise LookupError(f"Servable not found for request: Latest({name})")
        version = versions[-1] if version is None else int(version)
        if version not in versions:
            raise LookupError(f"Servable not found for request: Specific({name}, {version})")
        with self._lock:
            key = (name, version)
            if key not in self._cache:
                self._cache[key] = tf.saved_model.load(str(self.base / name / str(version)))
            return self._cache[key], version


class LoopbackServer:
    """TF Serving's REST API on 127.0.0.1 from exported SavedModels (see module doc)."""

    def __init__(self, base_dir, port: int = 0, *, delay_s: float = 0.0, fail_first: int = 0,
                 truncate_rows: bool = False, max_body_bytes: int = 64 << 20,
                 socket_timeout: float = 30.0):
        self.models = _Models(base_dir)
        self.delay_s, self.fail_first, self.truncate_rows = delay_s, fail_first, truncate_rows
        self.max_body_bytes = max_body_bytes
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = socket_timeout

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                m = _STATUS.match(self.path)
                if not m:
                    return self._send(404, {"error": f"Malformed request: GET {self.path}"})
                versions = server.models.versions(m.group(1))
                if not versions:
                    return self._send(404, {"error": f"Servable not found: {m.group(1)}"})
                self._send(200, {"model_version_status": [
                    {"version": str(v), "state": "AVAILABLE",
                     "status": {"error_code": "OK", "error_message": ""}} for v in versions]})

            def do_POST(self):
                server.requests += 1
                m = _PREDICT.match(self.path)
                if not m:
                    return self._send(404, {"error": f"Malformed request: POST {self.path}"})
                size = int(self.headers.get("Content-Length") or 0)
                if size > server.max_body_bytes:
                    return self._send(413, {"error": f"request body of {size} bytes exceeds "
                                                     f"{server.max_body_bytes}"})
                raw = self.rfile.read(size)
                if server.fail_first > 0:
                    server.fail_first -= 1
                    return self._send(503, {"error": "Service unavailable (injected)"})
                if server.delay_s:
                    time.sleep(server.delay_s)
                try:
                    code, obj = server.answer(m.group(1), m.group(2), raw)
                except BrokenPipeError:
                    return
                self._send(code, obj)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
        self._httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, name, version, raw: bytes):
        import tensorflow as tf
        try:
            req = json.loads(raw)
        except ValueError:
            return 400, {"error": "JSON Parse error: the request body is not JSON"}
        try:
            loaded, _ = self.models.get(name, version)
        except LookupError as err:
            return 404, {"error": str(err)}
        sig_name = req.get("signature_name", "serving_default")
        if sig_name not in loaded.signatures:
            return 400, {"error": f"Serving signature name: \"{sig_name}\" not found in "
                                  "signature def"}
        fn = loaded.signatures[sig_name]
        (in_name, spec), = fn.structured_input_signature[1].items()
        row_format = "instances" in req
        data = req.get("instances") if row_format else req.get("inputs")
        if isinstance(data, dict):
            data = data.get(in_name)
        elif row_format and data and isinstance(data[0], dict):
            data = [d.get(in_name) for d in data]
        if data is None:
            return 400, {"error": "Missing 'inputs' or 'instances' key"}
        try:
            x = np.asarray(data)
            if x.dtype.kind not in "iuf":
                raise ValueError("non-numeric")
            x = tf.constant(x.astype(spec.dtype.as_numpy_dtype))
            if not spec.shape.is_compatible_with(x.shape):
                raise ValueError(f"shape {x.shape} does not match {spec.shape}")
            out = fn(**{in_name: x})
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
            return 400, {"error": " ".join(f"Invalid input: {err}".split())[:500]}
        out = {k: v.numpy() for k, v in out.items()}
        if self.truncate_rows:
            out = {k: v[:-1] for k, v in out.items()}
        if row_format:
            n = len(next(iter(out.values())))
            return 200, {"predictions": [{k: v[i].tolist() for k, v in out.items()}
                                         for i in range(n)]}
        return 200, {"outputs": {k: v.tolist() for k, v in out.items()}}

    def start(self) -> "LoopbackServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class LoopbackGrpcServer:
    """TF Serving's gRPC ``PredictionService/Predict`` on 127.0.0.1 from exported SavedModels.

    Example::

        with LoopbackGrpcServer("runs/x/serving") as server:
            z = GrpcClient(server.target, "biased_mnist_end").embed(images)
    """

    def __init__(self, base_dir, port: int = 0, max_workers: int = 2):
        from concurrent import futures

        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        models = _Models(base_dir)

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):
                version = request.model_spec.version.value or None
                try:
                    loaded, v = models.get(request.model_spec.name, version)
                except LookupError as err:
                    context.abort(grpc.StatusCode.NOT_FOUND, str(err))
                sig = request.model_spec.signature_name or "serving_default"
                if sig not in loaded.signatures:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"Serving signature name: \"{sig}\" not found")
                fn = loaded.signatures[sig]
                try:
                    args = {k: tf.constant(tf.make_ndarray(t)) for k, t in request.inputs.items()}
                    out = fn(**args)
                except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  " ".join(str(err).split())[:500])
                reply = predict_pb2.PredictResponse()
                reply.model_spec.name = request.model_spec.name
                reply.model_spec.version.value = v
                for k, val in out.items():
                    reply.outputs[k].CopyFrom(tf.make_tensor_proto(val.numpy()))
                return reply

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                   options=[("grpc.max_receive_message_length", 64 << 20)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(),
                                                                            self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{int(port)}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "LoopbackGrpcServer":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1).wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="Loopback TF Serving REST server (127.0.0.1).")
    parser.add_argument("--base", required=True, help="folder with <model_name>/<version>/")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    args = parser.parse_args(argv)
    server = LoopbackServer(args.base, args.port).start()
    print(f"serving {args.base} at {server.url}", flush=True)
    try:
        if args.seconds:
            time.sleep(args.seconds)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
