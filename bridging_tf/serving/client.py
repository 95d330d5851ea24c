"""REST and gRPC clients for a TF-Serving encoder (see package doc)."""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
import threading
import time
import urllib.parse
from typing import Dict, Optional

import numpy as np

from bridging_tf.errors import UserError

# What TF Serving accepts as a model name in a URL path: no separators, no "..".
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}", re.ASCII)
_VERSION_RE = re.compile(r"[0-9]{1,18}", re.ASCII)
_URL_PATH_RE = re.compile(r"/v1/models/([^/:]*)(?:/versions/([^/:]*))?(?::predict)?/?")
_ERROR_BODY_BYTES = 64 << 10


class ServingError(UserError):
    """The served model could not be queried (down, timeout, error body, wrong shapes)."""


def check_model_name(name: str, what: str = "--model_name") -> str:
    """``name`` if it is a model name TF Serving can route; else :class:`ServingError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ServingError(f"{what}={name!r} is not a model name (letters, digits, '_', '.', "
                           "'-'; not starting with '.')")
    return name


def check_version(version, what: str = "--version") -> Optional[int]:
    """``None`` or a non-negative int version; else :class:`ServingError`."""
    if version is None:
        return None
    if isinstance(version, str):
        if not _VERSION_RE.fullmatch(version):
            raise ServingError(f"{what}={version!r} is not a model version (a non-negative "
                               "integer, e.g. /versions/1)")
        return int(version)
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
        raise ServingError(f"{what}={version!r} is not a model version (a non-negative integer)")
    return int(version)


def parse_url(url: str, model_name: Optional[str] = None, *,
              fallback_name: Optional[str] = None):
    """``(scheme, host:port, model_name, version)`` from ``http://h:p[/v1/models/NAME[/versions/N]]``
    or ``grpc://h:p``.

    ``model_name`` must agree with a name in the URL; ``fallback_name`` is used when
    neither names the model (e.g. the name a training run exported).
    """
    if not isinstance(url, str) or not url.strip():
        raise ServingError("--url is empty: use http://host:port (REST) or grpc://host:port")
    url = url.strip()
    parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https", "grpc"):
        raise ServingError(f"--url={url}: use http://host:port (REST) or grpc://host:port")
    if not parsed.netloc or not parsed.hostname:
        raise ServingError(f"--url={url}: no host:port")
    try:
        parsed.port
    except ValueError:
        raise ServingError(f"--url={url}: the port is not a number in 0-65535") from None
    if parsed.query or parsed.fragment or parsed.params:
        raise ServingError(f"--url={url}: no query (?...) or fragment (#...) expected")
    url_name = version = None
    if parsed.path not in ("", "/"):
        m = _URL_PATH_RE.fullmatch(parsed.path)
        if not m:
            raise ServingError(f"--url={url}: the path must be /v1/models/NAME[/versions/N]")
        url_name, v = m.groups()
        if not _NAME_RE.fullmatch(url_name):
            raise ServingError(f"--url={url}: {url_name!r} is not a model name (letters, "
                               "digits, '_', '.', '-'; not starting with '.')")
        if v is not None and not _VERSION_RE.fullmatch(v):
            raise ServingError(f"--url={url}: version {v!r} is not a number (use /versions/N, "
                               "N a non-negative integer)")
        version = None if v is None else int(v)
    if model_name is not None:
        check_model_name(model_name)
        if url_name is not None and url_name != model_name:
            raise ServingError(f"--model_name={model_name} disagrees with --url={url}")
    name = model_name or url_name or fallback_name
    if not name:
        raise ServingError(f"no model name: pass --model_name or a URL like "
                           f"{parsed.scheme}://{parsed.netloc}/v1/models/NAME")
    return parsed.scheme, parsed.netloc, check_model_name(name), version


def _positive(name: str, value, minimum: float = 0.0, integer: bool = False):
    """``value`` when finite and above ``minimum`` (``>= minimum`` and whole for integers)."""
    try:
        number = float(value)
        ok = math.isfinite(number) and not isinstance(value, bool) and (
            (number == int(number) and number >= minimum) if integer else number > minimum)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        bound = f"a whole number >= {minimum:g}" if integer else f"> {minimum:g} and finite"
        raise ServingError(f"{name}={value!r} must be {bound}")
    return int(value) if integer else float(value)


class _Client:
    def __init__(self, model_name: str, *, version: Optional[int] = None,
                 signature_name: str = "serving_default", batch_size: int = 256,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.2,
                 max_backoff: float = 5.0, deadline: Optional[float] = None,
                 max_response_bytes: int = 256 << 20):
        self.model_name = check_model_name(model_name)
        self.version = check_version(version)
        if not isinstance(signature_name, str) or not signature_name:
            raise ServingError(f"--signature={signature_name!r} must be a signature name")
        self.signature_name = signature_name
        self.batch_size = _positive("batch_size", batch_size, 1, integer=True)
        self.timeout = _positive("timeout", timeout)
        self.retries = _positive("retries", retries, 0, integer=True)
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff)):
            if not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ServingError(f"{name}={value!r} must be >= 0 and finite")
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.deadline = None if deadline is None else _positive("deadline", deadline)
        self.max_response_bytes = _positive("max_response_bytes", max_response_bytes, 1,
                                            integer=True)

    def _call_until(self) -> Optional[float]:
        return None if self.deadline is None else time.monotonic() + self.deadline

    def _attempt_timeout(self, until: Optional[float]) -> float:
        """Seconds this attempt may take: ``timeout``, less when the call's deadline is closer."""
        if until is None:
            return self.timeout
        return max(0.0, min(self.timeout, until - time.monotonic()))

    def _with_retries(self, fn, what: str, until: Optional[float] = None):
        """``fn(seconds)`` with retries of :class:`_Transient` failures (exponential backoff)."""
        last, tries = None, 0
        for attempt in range(self.retries + 1):
            seconds = self._attempt_timeout(until)
            if seconds <= 0:
                break
            tries += 1
            try:
                return fn(seconds)
            except _Transient as err:
                last = err
                if attempt < self.retries:
                    pause = min(self.max_backoff, self.backoff * 2 ** attempt)
                    if until is not None and time.monotonic() + pause >= until:
                        break
                    time.sleep(pause)
        if last is None:
            raise ServingError(f"{what}: the call's deadline of {self.deadline:g}s passed")
        why = (f"; the call's deadline of {self.deadline:g}s passed"
               if tries < self.retries + 1 else "")
        raise ServingError(f"{what}: {last} (gave up after {tries} "
                           f"{'try' if tries == 1 else 'tries'}{why})")

    def predict(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Outputs of the signature for uint8 ``images`` ``[N, H, W, C]``, sent in batches.

        With ``deadline`` set, the whole call (every batch, retries included) ends by then.
        """
        images = np.asarray(images)
        if images.ndim != 4:
            raise ServingError(f"images must be [N, H, W, C], got shape {images.shape}")
        if images.dtype != np.uint8:
            raise ServingError(f"images must be uint8 (raw pixels), got {images.dtype}")
        until = self._call_until()
        chunks: Dict[str, list] = {}
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            out = self._predict_batch(batch, until)
            for key, value in out.items():
                value = np.asarray(value)
                if value.ndim < 1 or value.shape[0] != len(batch):
                    raise ServingError(
                        f"{self.describe()}: output {key!r} has shape {value.shape} for a batch "
                        f"of {len(batch)} images (wrong model or signature?)")
                chunks.setdefault(key, []).append(value)
        if not chunks:
            return {}
        try:
            return {k: np.concatenate(v) for k, v in chunks.items()}
        except ValueError:
            raise ServingError(f"{self.describe()}: outputs change shape from batch to "
                               "batch") from None

    def embed(self, images: np.ndarray, output: str = "bottleneck") -> np.ndarray:
        """The ``output`` (bottleneck) rows for ``images`` as float32 ``[N, D]``."""
        out = self.predict(images)
        if output not in out:
            raise ServingError(f"{self.describe()}: no output {output!r} in the response "
                               f"(got {sorted(out)})")
        z = np.asarray(out[output], np.float32)
        if z.ndim != 2:
            raise ServingError(f"{self.describe()}: {output!r} should be [N, D], got {z.shape}")
        if not np.all(np.isfinite(z)):
            raise ServingError(f"{self.describe()}: {output!r} holds NaN or infinite values "
                               "(a diverged model?)")
        return z


class _Transient(Exception):
    """A failure worth retrying (refused / reset connection, timeout, cut-short answer, 5xx)."""


def _kill(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class RestClient(_Client):
    """TF Serving REST client: ``POST {url}/v1/models/{name}[/versions/{N}]:predict``.

    ``timeout`` is a total deadline for each request (connect, send, and the whole
    answer), not a per-read timeout; answers over ``max_response_bytes`` are refused.

    Example::

        client = RestClient("http://localhost:8501", "biased_mnist_end", timeout=10)
        out = client.predict(images)          # {"bottleneck": ..., "logits": ...}
    """

    def __init__(self, url: str, model_name: str, **kw):
        super().__init__(model_name, **kw)
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ServingError(f"--url={url}: use http://host:port")
        try:
            self._port = parsed.port
        except ValueError:
            raise ServingError(f"--url={url}: the port is not a number in 0-65535") from None
        self._scheme, self._host, self._prefix = parsed.scheme, parsed.hostname, parsed.path

    def describe(self) -> str:
        return f"TF Serving REST {self.endpoint()}"

    def _path(self) -> str:
        path = f"/v1/models/{self.model_name}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        return path

    def endpoint(self) -> str:
        return self.url + self._path() + ":predict"

    def status(self) -> dict:
        """``GET /v1/models/<name>[/versions/N]`` (model version status); raises when down."""
        url = self.endpoint()[: -len(":predict")]
        what = f"TF Serving REST {url}"
        return self._with_retries(lambda s: self._request("GET", self._path(), None, s, what),
                                  what, self._call_until())

    def _request(self, method: str, path: str, body: Optional[bytes], seconds: float,
                 what: str) -> dict:
        """One HTTP exchange that ends within ``seconds``; the JSON object answered."""
        start = time.monotonic()
        until = start + seconds
        cls = http.client.HTTPSConnection if self._scheme == "https" else \
            http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=seconds)
        fired = threading.Event()
        watchdog = None

        def expire(sock):
            fired.set()
            _kill(sock)

        try:
            try:
                conn.connect()
                sock = conn.sock
                # A total deadline: reads are bounded below, and the watchdog unblocks any
                # read the server dribbles out (status line, headers) past it.
                watchdog = threading.Timer(max(0.0, until - time.monotonic()), expire, (sock,))
                watchdog.daemon = True
                watchdog.start()
                headers = {"Accept": "application/json"}
                if body is not None:
                    headers["Content-Type"] = "application/json"
                try:
                    conn.request(method, self._prefix + path, body=body, headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server may have answered early (e.g. 413): read that below
                resp = conn.getresponse()
                raw = self._read(resp, sock, until, what)
            except ServingError:
                raise
            except Exception as err:
                if (fired.is_set() or time.monotonic() >= until
                        or isinstance(err, (socket.timeout, TimeoutError))):
                    raise _Transient(f"timed out after {seconds:g}s (total deadline of the "
                                     "request)") from None
                raise _classify(err) from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            conn.close()
        code = resp.status
        if not 200 <= code < 300:
            detail = _error_detail(raw)
            if code >= 500 or code == 429:
                raise _Transient(f"HTTP {code}: {detail}")
            raise ServingError(f"{what} answered HTTP {code}: {detail}")
        try:
            reply = json.loads(raw)
        except RecursionError:
            raise ServingError(f"{what} answered with JSON nested too deeply") from None
        except ValueError:
            raise ServingError(f"{what} answered with a body that is not JSON: "
                               f"{raw[:80]!r}") from None
        if not isinstance(reply, dict):
            raise ServingError(f"{what} answered with a JSON {type(reply).__name__}, not an "
                               "object")
        return reply

    def _read(self, resp, sock, until: float, what: str) -> bytes:
        """The body of ``resp``: at most ``max_response_bytes`` (error bodies: 64 KiB)."""
        cap = self.max_response_bytes if 200 <= resp.status < 300 else _ERROR_BODY_BYTES
        length = (resp.getheader("Content-Length") or "").strip()
        if length.isdigit() and int(length) > cap and 200 <= resp.status < 300:
            raise ServingError(f"{what} answered {int(length)} bytes, over max_response_bytes="
                               f"{cap}")
        chunks, total, cut = [], 0, False
        while not resp.isclosed():  # (it closes itself once Content-Length bytes are read)
            left = until - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline")
            sock.settimeout(left)
            chunk = resp.read(min(65536, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                if 200 <= resp.status < 300:
                    raise ServingError(f"{what} answered more than max_response_bytes={cap} "
                                       "bytes")
                cut = True
                break  # an error body: its start is enough to name the error
        if resp.length and not cut:  # Content-Length promised more than came before the close
            raise http.client.IncompleteRead(b"".join(chunks), resp.length)
        return b"".join(chunks)

    def _predict_batch(self, batch: np.ndarray, until: Optional[float] = None
                       ) -> Dict[str, np.ndarray]:
        body = json.dumps({"signature_name": self.signature_name,
                           "inputs": {"image": batch.tolist()}}).encode()
        what = self.describe()
        path = self._path() + ":predict"
        reply = self._with_retries(lambda s: self._request("POST", path, body, s, what), what,
                                   until)
        if "error" in reply:
            raise ServingError(f"{what} answered with an error: {_one_line(reply['error'])}")
        if "outputs" in reply:
            outs = reply["outputs"]
            if not isinstance(outs, dict):  # single-output signature
                outs = {"output": outs}
        elif "predictions" in reply:  # row format
            preds = reply["predictions"]
            if not isinstance(preds, list):
                raise ServingError(f"{what}: 'predictions' is a {type(preds).__name__}, not a "
                                   "list")
            if preds and isinstance(preds[0], dict):
                keys = set(preds[0])
                if not all(isinstance(p, dict) and set(p) == keys for p in preds):
                    raise ServingError(f"{what}: 'predictions' rows name different outputs")
                outs = {k: [p[k] for p in preds] for k in preds[0]}
            else:
                outs = {"output": preds}
        else:
            raise ServingError(f"{what}: response has neither 'outputs' nor "
                               f"'predictions' (keys {sorted(reply)[:5]})")
        try:
            return {str(k): np.asarray(v, np.float32) for k, v in outs.items()}
        except (ValueError, TypeError, OverflowError):
            raise ServingError(f"{what}: outputs are not rectangular numeric arrays") from None


def _classify(err: BaseException) -> BaseException:
    """A transport failure as :class:`_Transient` (worth retrying) or :class:`ServingError`."""
    if isinstance(err, (socket.timeout, TimeoutError)):
        return _Transient("timed out")
    if isinstance(err, http.client.IncompleteRead):
        return _Transient(f"the answer was cut short ({len(err.partial)} bytes read, "
                          f"{err.expected} more expected)")
    if isinstance(err, http.client.RemoteDisconnected):
        return _Transient("the server closed the connection without answering")
    if isinstance(err, ConnectionRefusedError):
        return _Transient(f"cannot connect ({err.strerror or err})")
    if isinstance(err, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return _Transient(f"the connection was reset ({err.strerror or err})")
    if isinstance(err, socket.gaierror):
        return ServingError(f"cannot resolve the host ({err.strerror or err})")
    if isinstance(err, http.client.HTTPException):
        return ServingError(f"the server's answer is not valid HTTP ({type(err).__name__}: "
                            f"{_one_line(err)[:120]})")
    if isinstance(err, OSError):
        return _Transient(f"cannot connect ({err.strerror or err})")
    return ServingError(f"request failed ({type(err).__name__}: {_one_line(err)[:120]})")


def _one_line(obj) -> str:
    return " ".join(str(obj).split())[:300]


def _error_detail(raw: bytes) -> str:
    try:
        msg = json.loads(raw).get("error", "")
    except (ValueError, AttributeError, RecursionError):
        msg = raw[:200].decode("utf-8", "replace")
    return _one_line(msg) or "(no body)"


class GrpcClient(_Client):
    """TF Serving gRPC client (``tensorflow-serving-api``): ``PredictionService/Predict``.

    ``timeout`` is the RPC's deadline; answers over ``max_response_bytes`` are refused.

    Example::

        client = GrpcClient("localhost:8500", "biased_mnist_end")
        z = client.embed(images)
    """

    def __init__(self, target: str, model_name: str, **kw):
        super().__init__(model_name, **kw)
        try:
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc
        except ImportError:
            raise ServingError("gRPC needs the serving extra: pip install "
                               "'bridging_tf[serving]'") from None
        self.target = target.split("://", 1)[-1]
        self._grpc = grpc
        self._channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_receive_message_length", self.max_response_bytes),
            ("grpc.max_send_message_length", 256 << 20)])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def describe(self) -> str:
        return f"TF Serving gRPC {self.target} model {self.model_name!r}"

    def close(self):
        self._channel.close()

    def _predict_batch(self, batch: np.ndarray, until: Optional[float] = None
                       ) -> Dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        req = predict_pb2.PredictRequest()
        req.model_spec.name = self.model_name
        req.model_spec.signature_name = self.signature_name
        if self.version is not None:
            req.model_spec.version.value = int(self.version)
        req.inputs["image"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.uint8))
        grpc = self._grpc

        def call(seconds):
            try:
                return self._stub.Predict(req, timeout=seconds)
            except grpc.RpcError as err:
                code = err.code() if callable(getattr(err, "code", None)) else None
                detail = _one_line(err.details() if callable(getattr(err, "details", None))
                                   else err)
                name = getattr(code, "name", "UNKNOWN")
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in detail:
                    raise ServingError(f"{self.describe()}: the answer is over "
                                       f"max_response_bytes={self.max_response_bytes} "
                                       f"({detail})") from None
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.RESOURCE_EXHAUSTED):
                    raise _Transient(f"{name}: {detail}") from None
                raise ServingError(f"{self.describe()} answered {name}: {detail}") from None
            except (ValueError, TypeError) as err:
                raise ServingError(f"{self.describe()}: request failed ({_one_line(err)})"
                                   ) from None

        reply = self._with_retries(call, self.describe(), until)
        try:
            return {k: tf.make_ndarray(v) for k, v in reply.outputs.items()}
        except Exception as err:
            raise ServingError(f"{self.describe()}: an output tensor could not be decoded "
                               f"({type(err).__name__})") from None


def make_client(url: str, model_name: Optional[str] = None, *,
                fallback_name: Optional[str] = None, **kw) -> _Client:
    """A :class:`RestClient` for ``http(s)://`` URLs, a :class:`GrpcClient` for ``grpc://``.

    A version in the URL and ``version=`` must agree; either one pins the version.
    """
    scheme, netloc, name, version = parse_url(url, model_name, fallback_name=fallback_name)
    given = check_version(kw.get("version"))
    if given is not None and version is not None and given != version:
        raise ServingError(f"--version={given} disagrees with the version in --url={url}")
    kw["version"] = given if given is not None else version
    if scheme == "grpc":
        return GrpcClient(netloc, name, **kw)
    return RestClient(f"{scheme}://{netloc}", name, **kw)
