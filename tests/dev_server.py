"""Development server: a 127.0.0.1-only stand-in for ``tensorflow_model_server``.

A test helper, **not part of the package** (``bridging_tf.serving`` ships only
the clients): it lets the tests and a demo from a clone run the served attack
(``pipelines.attack_served``) where TF Serving is not installed. Production
serves the export with the real ``tensorflow_model_server`` (see
:mod:`bridging_tf.export` for the Docker recipe).

It serves every ``<base>/<model_name>/<version>/`` SavedModel with TF
Serving's REST API: ``POST /v1/models/<name>[/versions/N]:predict``
(columnar ``inputs`` or row ``instances``; answers ``outputs`` or
``predictions``) and ``GET /v1/models/<name>[/versions/N]``, and optionally
gRPC ``PredictionService/Predict`` (:class:`DevGrpcServer`).

Every answer has an HTTP status and a JSON body; errors are ``{"error": ...}``:

- model names are ``[A-Za-z0-9_][A-Za-z0-9_.-]*`` and versions ASCII digits
  (400 otherwise), so nothing outside ``<base>`` is ever listed or loaded;
  unknown models / versions are 404, other paths 404, other methods 405;
- a POST needs exactly one ``Content-Length`` of ASCII digits: 411 when it is
  missing (or ``Transfer-Encoding`` is used), 400 when it is negative, not a
  number or contradicted by a second header, 413 over ``max_body_bytes`` (the
  body is then never buffered; at most 1 MiB of it is read and discarded so
  the client sees the 413 rather than a reset), 400 when the body ends early,
  408 when it stalls past ``socket_timeout``;
- a body that is not a JSON object with exactly one of ``inputs`` /
  ``instances`` of the right shape (invalid or too deeply nested JSON, a JSON
  array, ``{"instances": 5}``, a non-string ``signature_name``, unknown input
  names) is 400;
- values the signature's input dtype cannot hold exactly (uint8: integers in
  [0, 255]; so no 256, -256, 1.5, NaN, inf, booleans or strings) are 400;
- anything else that fails is a 500 with the error named.

Fault injection for tests: ``delay_s`` (slow answers), ``fail_first`` (that
many HTTP 503s first), ``truncate_rows`` (answers with too few rows).

Example::

    from tests.dev_server import DevServer
    with DevServer("runs/x/serving") as server:
        z = RestClient(server.url, "biased_mnist_end").embed(images)

    python -m tests.dev_server --base=runs/x/serving --port=8501   # from the repository root
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}", re.ASCII)
VERSION_RE = re.compile(r"[0-9]{1,18}", re.ASCII)
_DRAIN_BYTES = 1 << 20  # what is read (and discarded) of a refused body


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = int(code), " ".join(str(message).split())[:500]


def check_model_name(name) -> str:
    """``name`` when it is a safe model name (no separators, no ``..``); else 400."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise RequestError(400, f"Malformed request: invalid model name {str(name)[:80]!r} "
                                "(letters, digits, '_', '.', '-'; not starting with '.')")
    return name


def check_version(version) -> Optional[int]:
    """``None`` or the version as an int when it is ASCII digits; else 400."""
    if version is None:
        return None
    if isinstance(version, int) and not isinstance(version, bool) and 0 <= version < 10 ** 18:
        return version
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise RequestError(400, f"Malformed request: invalid version {str(version)[:80]!r} "
                                "(a non-negative integer)")
    return int(version)


def parse_route(path: str) -> Tuple[str, Optional[int], str]:
    """``(name, version, verb)`` of ``/v1/models/<name>[/versions/<N>][:<verb>]``.

    400 for a bad name or version, 404 for any other path.
    """
    path = urlsplit(path).path
    prefix = "/v1/models/"
    if not path.startswith(prefix):
        raise RequestError(404, f"Malformed request: {path[:120]!r} is not /v1/models/...")
    rest, _, verb = path[len(prefix):].partition(":")
    parts = rest.split("/")
    if len(parts) == 1:
        name, version = parts[0], None
    elif len(parts) == 3 and parts[1] == "versions":
        name, version = parts[0], parts[2]
    else:
        raise RequestError(404, f"Malformed request: {path[:120]!r} (expected "
                                "/v1/models/NAME[/versions/N][:predict])")
    return check_model_name(name), check_version(version), verb


class _Models:
    """Lazily loaded SavedModels ``(name, version) -> loaded``, only under ``base``."""

    def __init__(self, base):
        self.base = Path(base)
        self._cache = {}
        self._lock = threading.Lock()

    def _dir(self, name: str) -> Path:
        d = self.base / check_model_name(name)
        # Defence in depth: the name check already forbids separators and "..".
        if os.path.normpath(d.parent) != os.path.normpath(self.base):
            raise RequestError(400, f"Malformed request: invalid model name {name!r}")
        return d

    def versions(self, name: str) -> list:
        d = self._dir(name)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir()
                      if VERSION_RE.fullmatch(p.name) and p.is_dir())

    def get(self, name: str, version=None):
        """``(loaded SavedModel, version)``; 404 when the model or version is absent."""
        import tensorflow as tf
        version = check_version(version)
        versions = self.versions(name)
        if not versions:
            raise RequestError(404, f"Servable not found for request: Latest({name})")
        version = versions[-1] if version is None else version
        if version not in versions:
            raise RequestError(404, f"Servable not found for request: Specific({name}, "
                                    f"{version})")
        with self._lock:
            key = (name, version)
            if key not in self._cache:
                try:
                    self._cache[key] = tf.saved_model.load(str(self._dir(name) / str(version)))
                except Exception as err:  # a torn or foreign folder: say so, keep serving
                    raise RequestError(500, f"Could not load {name} version {version}: "
                                            f"{type(err).__name__}: {err}") from None
            return self._cache[key], version


def _signature(loaded, sig_name):
    if not isinstance(sig_name, str):
        raise RequestError(400, f"'signature_name' must be a string, got "
                                f"{type(sig_name).__name__}")
    if sig_name not in loaded.signatures:
        raise RequestError(400, f"Serving signature name: \"{sig_name[:80]}\" not found in "
                                "signature def")
    fn = loaded.signatures[sig_name]
    inputs = fn.structured_input_signature[1]
    if len(inputs) != 1:
        raise RequestError(500, f"the development server only serves single-input signatures "
                                f"({sig_name} has {len(inputs)})")
    (in_name, spec), = inputs.items()
    return fn, in_name, spec


def _has_bool(data) -> bool:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            return True
        if isinstance(item, list):
            stack.extend(item)
    return False


def input_array(data, dtype, shape=None, *, may_hold_bools: bool = True) -> np.ndarray:
    """``data`` (nested lists from JSON) as a ``dtype`` array, refusing anything that does not fit.

    400 for ragged or non-numeric data, booleans for a numeric input, a shape
    that does not match ``shape`` (a ``tf.TensorShape``), and values the dtype
    cannot hold exactly: non-integers / NaN / inf / out-of-range for integer
    dtypes (uint8: 0..255), non-finite or overflowing values for floats.
    """
    dtype = np.dtype(dtype)
    try:
        x = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise RequestError(400, "Invalid input: not a rectangular array of numbers") from None
    if x.dtype == object:
        raise RequestError(400, "Invalid input: not a rectangular array of numbers (ragged, "
                                "mixed, or integers too large)")
    if dtype.kind != "b" and (x.dtype.kind == "b" or (may_hold_bools and x.dtype.kind in "iu"
                                                      and _has_bool(data))):
        raise RequestError(400, f"Invalid input: booleans for a {dtype.name} input")
    if x.dtype.kind not in "biuf":
        raise RequestError(400, f"Invalid input: non-numeric values ({x.dtype.kind!r} data) for "
                                f"a {dtype.name} input")
    if shape is not None and not shape.is_compatible_with(x.shape):
        raise RequestError(400, f"Invalid input: shape {list(x.shape)} does not match the "
                                f"signature's {shape}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if x.dtype.kind == "f":
            if not np.all(np.isfinite(x)):
                raise RequestError(400, f"Invalid input: NaN or infinite values for a "
                                        f"{dtype.name} input")
            if np.any(x != np.floor(x)):
                raise RequestError(400, f"Invalid input: non-integer values for a {dtype.name} "
                                        "input")
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise RequestError(400, f"Invalid input: values outside the {dtype.name} range "
                                    f"[{info.min}, {info.max}] (min {x.min():g}, max {x.max():g})")
    elif dtype.kind == "f":
        if x.size and not np.all(np.isfinite(x)):
            raise RequestError(400, f"Invalid input: NaN or infinite values for a {dtype.name} "
                                    "input")
        if x.size and np.max(np.abs(x)) > np.finfo(dtype).max:
            raise RequestError(400, f"Invalid input: values overflow {dtype.name}")
    elif dtype.kind == "b" and x.dtype.kind != "b":
        raise RequestError(400, "Invalid input: a bool input takes true / false")
    elif dtype.kind not in "biuf":
        raise RequestError(500, f"the development server does not serve {dtype.name} inputs")
    return x.astype(dtype)


def parse_predict_body(raw: bytes) -> dict:
    """The request object of a ``:predict`` body; 400 unless it is a JSON object with one of
    ``inputs`` / ``instances`` and (optionally) a string ``signature_name``."""
    try:
        req = json.loads(raw)
    except RecursionError:
        raise RequestError(400, "JSON Parse error: nested too deeply") from None
    except ValueError as err:  # includes UnicodeDecodeError
        raise RequestError(400, f"JSON Parse error: {err}") from None
    if not isinstance(req, dict):
        raise RequestError(400, f"the request body must be a JSON object, got a "
                                f"{type(req).__name__}")
    if ("instances" in req) == ("inputs" in req):
        raise RequestError(400, "the request must hold exactly one of 'instances' (rows) or "
                                "'inputs' (columns)")
    if not isinstance(req.get("signature_name", "serving_default"), str):
        raise RequestError(400, f"'signature_name' must be a string, got "
                                f"{type(req['signature_name']).__name__}")
    return req


def request_data(req: dict, in_name: str):
    """The nested list for input ``in_name`` from a parsed request; 400 on a wrong layout."""
    if "instances" in req:
        inst = req["instances"]
        if not isinstance(inst, list) or not inst:
            raise RequestError(400, f"'instances' must be a non-empty list, got "
                                    f"{type(inst).__name__}")
        dicts = [isinstance(r, dict) for r in inst]
        if any(dicts):
            if not all(dicts) or any(set(r) != {in_name} for r in inst):
                raise RequestError(400, f"every instance must be an object with exactly the "
                                        f"input {in_name!r}")
            return [r[in_name] for r in inst]
        return inst
    inputs = req["inputs"]
    if isinstance(inputs, dict):
        if set(inputs) != {in_name}:
            raise RequestError(400, f"'inputs' must name exactly the input {in_name!r}, got "
                                    f"{sorted(inputs)[:5]}")
        return inputs[in_name]
    if isinstance(inputs, list):
        return inputs
    raise RequestError(400, f"'inputs' must be a list or an object, got {type(inputs).__name__}")


class DevServer:
    """TF Serving's REST API on 127.0.0.1 from exported SavedModels (see module doc)."""

    def __init__(self, base_dir, port: int = 0, *, delay_s: float = 0.0, fail_first: int = 0,
                 truncate_rows: bool = False, max_body_bytes: int = 64 << 20,
                 socket_timeout: float = 30.0):
        self.models = _Models(base_dir)
        self.delay_s, self.fail_first, self.truncate_rows = delay_s, fail_first, truncate_rows
        self.max_body_bytes = int(max_body_bytes)
        self.requests = 0
        self._count_lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = socket_timeout
            server_version = "bridging-tf-dev-server"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, obj, close=False):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def send_error(self, code, message=None, explain=None):
                # http.server's own refusals (bad request line, 414, 431, ...) as JSON too,
                # with a status line even when the request line was not HTTP/1.x.
                if getattr(self, "request_version", "HTTP/0.9") in ("HTTP/0.9", ""):
                    self.request_version = "HTTP/1.0"
                try:
                    self._send(code, {"error": message or HTTPStatus(code).phrase}, close=True)
                except OSError:
                    pass

            def _reply(self, fn):
                self._unread = None  # POST: body bytes still unread when we answer
                try:
                    code, obj = fn()
                except RequestError as err:
                    code, obj = err.code, {"error": err.message}
                except Exception as err:  # a bug: still an HTTP status, never a dropped socket
                    code, obj = 500, {"error": " ".join(
                        f"Internal error: {type(err).__name__}: {err}".split())[:500]}
                try:
                    self._send(code, obj, close=code >= 400)
                    if self.command == "POST" and self._unread != 0:
                        self._drain(_DRAIN_BYTES if self._unread is None
                                    else min(self._unread, _DRAIN_BYTES))
                except OSError:
                    pass  # the client went away

            def _drain(self, n):
                """Read and discard up to ``n`` body bytes (for at most 1 s), so that the
                client reads our answer instead of a connection reset."""
                self.wfile.flush()
                stop = time.monotonic() + 1.0
                try:
                    while n > 0 and time.monotonic() < stop:
                        self.connection.settimeout(max(0.01, min(0.5, stop - time.monotonic())))
                        chunk = self.rfile.read1(min(n, 65536))
                        if not chunk:
                            break
                        n -= len(chunk)
                except OSError:
                    pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding"):
                    raise RequestError(411, "Transfer-Encoding is not supported; send the body "
                                            "with a Content-Length")
                values = [v.strip() for v in self.headers.get_all("Content-Length") or []]
                if not values:
                    raise RequestError(411, "Length Required: a POST needs a Content-Length")
                if len(set(values)) > 1:
                    raise RequestError(400, f"conflicting Content-Length headers {values[:3]}")
                value = values[0]
                if not re.fullmatch(r"[0-9]+", value, re.ASCII):
                    what = ("negative" if re.fullmatch(r"-[0-9]+", value, re.ASCII)
                            else "not a number of bytes")
                    raise RequestError(400, f"Content-Length: {value[:40]!r} is {what}")
                size = int(value) if len(value) <= 18 else server.max_body_bytes + 1
                self._unread = size
                if size > server.max_body_bytes:
                    raise RequestError(413, f"request body of {value[:40]} bytes exceeds the "
                                            f"limit of {server.max_body_bytes}")
                try:
                    raw = self.rfile.read(size)
                except (socket.timeout, TimeoutError):
                    raise RequestError(408, f"timed out reading a body of {size} bytes") from None
                except OSError as err:
                    raise RequestError(400, f"the request body could not be read ({err})") from None
                self._unread = 0
                if len(raw) < size:
                    raise RequestError(400, f"request body ended after {len(raw)} of {size} "
                                            "bytes (Content-Length)")
                return raw

            def do_GET(self):
                self._reply(lambda: server.status(self.path))

            def do_POST(self):
                with server._count_lock:
                    server.requests += 1
                self._reply(lambda: server.predict(self.path, self._body))

            def _not_allowed(self):
                self._reply(lambda: (405, {"error": f"Method {self.command} is not allowed "
                                                    "(GET status, POST :predict)"}))

            do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _not_allowed

        self._httpd = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
        self._httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self, path: str):
        """``(code, body)`` of ``GET /v1/models/<name>[/versions/N]``."""
        name, version, verb = parse_route(path)
        if verb:
            raise RequestError(404, f"Malformed request: GET {path[:120]!r} (POST :predict)")
        versions = self.models.versions(name)
        if not versions:
            raise RequestError(404, f"Servable not found: {name}")
        if version is not None:
            if version not in versions:
                raise RequestError(404, f"Servable not found: Specific({name}, {version})")
            versions = [version]
        return 200, {"model_version_status": [
            {"version": str(v), "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}} for v in versions]}

    def predict(self, path: str, read_body):
        """``(code, body)`` of ``POST /v1/models/<name>[/versions/N]:predict``."""
        name, version, verb = parse_route(path)
        if verb != "predict":
            raise RequestError(404 if not verb else 400,
                               f"Malformed request: POST {path[:120]!r} (only :predict)")
        raw = read_body()
        with self._count_lock:
            fail = self.fail_first > 0
            if fail:
                self.fail_first -= 1
        if fail:
            return 503, {"error": "Service unavailable (injected)"}
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.answer(name, version, raw)

    def answer(self, name, version, raw: bytes):
        """``(code, body)`` for a ``:predict`` body sent to model ``name`` [``version``]."""
        import tensorflow as tf
        req = parse_predict_body(raw)
        loaded, _ = self.models.get(name, version)
        fn, in_name, spec = _signature(loaded, req.get("signature_name", "serving_default"))
        x = input_array(request_data(req, in_name), spec.dtype.as_numpy_dtype, spec.shape,
                        may_hold_bools=b"true" in raw or b"false" in raw)
        try:
            out = fn(**{in_name: tf.constant(x)})
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
            raise RequestError(400, f"Invalid input: {err}") from None
        out = {k: v.numpy() for k, v in out.items()}
        if self.truncate_rows:
            out = {k: v[:-1] for k, v in out.items()}
        if "instances" in req:
            n = len(next(iter(out.values())))
            return 200, {"predictions": [{k: v[i].tolist() for k, v in out.items()}
                                         for i in range(n)]}
        return 200, {"outputs": {k: v.tolist() for k, v in out.items()}}

    def start(self) -> "DevServer":
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


_GRPC_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED",
               500: "INTERNAL"}


class DevGrpcServer:
    """TF Serving's gRPC ``PredictionService/Predict`` on 127.0.0.1 from exported SavedModels.

    The same name / version / dtype-range checks as :class:`DevServer`; refusals are
    ``INVALID_ARGUMENT`` / ``NOT_FOUND`` / ``INTERNAL`` with a one-line detail.

    Example::

        with DevGrpcServer("runs/x/serving") as server:
            z = GrpcClient(server.target, "biased_mnist_end").embed(images)
    """

    def __init__(self, base_dir, port: int = 0, max_workers: int = 2,
                 max_message_bytes: int = 64 << 20):
        from concurrent import futures

        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        models = _Models(base_dir)

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):
                try:
                    return _grpc_predict(models, request)
                except RequestError as err:
                    code = getattr(grpc.StatusCode, _GRPC_CODES.get(err.code, "INTERNAL"))
                    detail = err.message
                except Exception as err:  # a bug: still a status, with the error named
                    code = grpc.StatusCode.INTERNAL
                    detail = " ".join(f"{type(err).__name__}: {err}".split())[:500]
                context.abort(code, detail)  # raises; outside the try so it is not caught

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                   options=[("grpc.max_receive_message_length",
                                             int(max_message_bytes))])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(),
                                                                            self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{int(port)}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "DevGrpcServer":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1).wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _grpc_predict(models: _Models, request):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    spec_ = request.model_spec
    version = spec_.version.value if spec_.HasField("version") else None
    loaded, v = models.get(spec_.name, version)
    fn, in_name, spec = _signature(loaded, spec_.signature_name or "serving_default")
    if set(request.inputs) != {in_name}:
        raise RequestError(400, f"inputs must be exactly {in_name!r}, got {sorted(request.inputs)}")
    try:
        x = tf.make_ndarray(request.inputs[in_name])
    except Exception as err:
        raise RequestError(400, f"Invalid input tensor: {type(err).__name__}: {err}") from None
    if x.dtype != spec.dtype.as_numpy_dtype:
        raise RequestError(400, f"Invalid input: expects {spec.dtype.name}, got {x.dtype.name}")
    x = input_array(x, spec.dtype.as_numpy_dtype, spec.shape, may_hold_bools=False)
    try:
        out = fn(**{in_name: tf.constant(x)})
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as err:
        raise RequestError(400, f"Invalid input: {err}") from None
    reply = predict_pb2.PredictResponse()
    reply.model_spec.name = spec_.name
    reply.model_spec.version.value = v
    for k, val in out.items():
        reply.outputs[k].CopyFrom(tf.make_tensor_proto(val.numpy()))
    return reply


def main(argv=None) -> int:
    import argparse
    import sys
    parser = argparse.ArgumentParser(description="Development TF Serving REST server "
                                                 "(127.0.0.1 only; not for production).")
    parser.add_argument("--base", required=True, help="folder with <model_name>/<version>/")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    args = parser.parse_args(argv)
    if not Path(args.base).is_dir():
        print(f"error: --base={args.base}: no such folder", file=sys.stderr)
        return 2
    try:
        server = DevServer(args.base, args.port).start()
    except OSError as err:
        print(f"error: --port={args.port}: cannot listen ({err.strerror or err})", file=sys.stderr)
        return 2
    print(f"serving {args.base} at {server.url} (development server)", flush=True)
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
