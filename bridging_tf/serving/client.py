"""REST and gRPC clients for a TF-Serving encoder (see package doc)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Optional

import numpy as np

from bridging_tf.errors import UserError


class ServingError(UserError):
    """The served model could not be queried (down, timeout, error body, wrong shapes)."""


def parse_url(url: str, model_name: Optional[str] = None):
    """``(scheme, host:port, model_name, version)`` from ``http://h:p[/v1/models/NAME[/versions/N]]``
    or ``grpc://h:p``."""
    parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https", "grpc"):
        raise ServingError(f"--url={url}: use http://host:port (REST) or grpc://host:port")
    if not parsed.netloc:
        raise ServingError(f"--url={url}: no host:port")
    version = None
    parts = [p for p in parsed.path.split("/") if p]
    if len(parts) >= 3 and parts[:2] == ["v1", "models"]:
        model_name = model_name or parts[2].split(":")[0]
        if len(parts) >= 5 and parts[3] == "versions":
            version = int(parts[4].split(":")[0])
    if not model_name:
        raise ServingError(f"no model name: pass --model_name or a URL like "
                           f"{parsed.scheme}://{parsed.netloc}/v1/models/NAME")
    return parsed.scheme, parsed.netloc, model_name, version


class _Client:
    def __init__(self, model_name: str, *, version: Optional[int] = None,
                 signature_name: str = "serving_default", batch_size: int = 256,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.2,
                 max_backoff: float = 5.0):
        if batch_size < 1:
            raise ServingError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name, self.version, self.signature_name = model_name, version, signature_name
        self.batch_size, self.timeout = int(batch_size), float(timeout)
        self.retries, self.backoff, self.max_backoff = int(retries), backoff, max_backoff

    def _with_retries(self, fn, what: str):
        last = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except _Transient as err:
                last = err
                if attempt < self.retries:
                    time.sleep(min(self.max_backoff, self.backoff * 2 ** attempt))
        raise ServingError(f"{what}: {last} (gave up after {self.retries + 1} tries)")

    def predict(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Outputs of the signature for uint8 ``images`` ``[N, H, W, C]``, sent in batches."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ServingError(f"images must be [N, H, W, C], got shape {images.shape}")
        if images.dtype != np.uint8:
            raise ServingError(f"images must be uint8 (raw pixels), got {images.dtype}")
        chunks: Dict[str, list] = {}
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            out = self._predict_batch(batch)
            for key, value in out.items():
                value = np.asarray(value)
                if value.ndim < 1 or value.shape[0] != len(batch):
                    raise ServingError(
                        f"{self.describe()}: output {key!r} has shape {value.shape} for a batch "
                        f"of {len(batch)} images (wrong model or signature?)")
                chunks.setdefault(key, []).append(value)
        if not chunks:
            return {}
        return {k: np.concatenate(v) for k, v in chunks.items()}

    def embed(self, images: np.ndarray, output: str = "bottleneck") -> np.ndarray:
        """The ``output`` (bottleneck) rows for ``images`` as float32 ``[N, D]``."""
        out = self.predict(images)
        if output not in out:
            raise ServingError(f"{self.describe()}: no output {output!r} in the response "
                               f"(got {sorted(out)})")
        z = np.asarray(out[output], np.float32)
        if z.ndim != 2:
            raise ServingError(f"{self.describe()}: {output!r} should be [N, D], got {z.shape}")
        return z


class _Transient(Exception):
    """A failure worth retrying (connection refused, timeout, 5xx, UNAVAILABLE)."""


class RestClient(_Client):
    """TF Serving REST client: ``POST {url}/v1/models/{name}[/versions/{N}]:predict``.

    Example::

        client = RestClient("http://localhost:8501", "biased_mnist_end", timeout=10)
        out = client.predict(images)          # {"bottleneck": ..., "logits": ...}
    """

    def __init__(self, url: str, model_name: str, **kw):
        super().__init__(model_name, **kw)
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url

    def describe(self) -> str:
        return f"TF Serving REST {self.endpoint()}"

    def endpoint(self) -> str:
        path = f"/v1/models/{self.model_name}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        return self.url + path + ":predict"

    def status(self) -> dict:
        """``GET /v1/models/<name>[/versions/N]`` (model version status); raises when down."""
        url = self.endpoint()[: -len(":predict")]

        def get():
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as err:
                detail = _error_detail(err.read())
                if err.code >= 500:
                    raise _Transient(f"HTTP {err.code}: {detail}") from None
                raise ServingError(f"TF Serving REST {url} answered HTTP {err.code}: "
                                   f"{detail}") from None
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    raise _Transient(f"timed out after {self.timeout:g}s") from None
                raise _Transient(f"cannot connect ({getattr(reason, 'strerror', None) or reason})"
                                 ) from None
            except ValueError:
                raise ServingError(f"TF Serving REST {url} answered with a body that is not "
                                   "JSON") from None

        return self._with_retries(get, f"TF Serving REST {url}")

    def _post(self, body: bytes) -> dict:
        req = urllib.request.Request(self.endpoint(), data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = _error_detail(err.read())
            if err.code >= 500:
                raise _Transient(f"HTTP {err.code}: {detail}") from None
            raise ServingError(f"{self.describe()} answered HTTP {err.code}: {detail}") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise _Transient(f"timed out after {self.timeout:g}s") from None
            raise _Transient(f"cannot connect ({getattr(reason, 'strerror', None) or reason})"
                             ) from None
        except (socket.timeout, TimeoutError):
            raise _Transient(f"timed out after {self.timeout:g}s") from None
        except (ConnectionError, OSError) as err:
            raise _Transient(f"connection failed ({err})") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServingError(f"{self.describe()} answered with a body that is not JSON: "
                               f"{raw[:80]!r}") from None

    def _predict_batch(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        body = json.dumps({"signature_name": self.signature_name,
                           "inputs": {"image": batch.tolist()}}).encode()
        reply = self._with_retries(lambda: self._post(body), self.describe())
        if "error" in reply:
            raise ServingError(f"{self.describe()} answered with an error: {reply['error']}")
        if "outputs" in reply:
            outs = reply["outputs"]
            if not isinstance(outs, dict):  # single-output signature
                outs = {"output": outs}
        elif "predictions" in reply:  # row format
            preds = reply["predictions"]
            if preds and isinstance(preds[0], dict):
                outs = {k: [p[k] for p in preds] for k in preds[0]}
            else:
                outs = {"output": preds}
        else:
            raise ServingError(f"{self.describe()}: response has neither 'outputs' nor "
                               f"'predictions' (keys {sorted(reply)})")
        try:
            return {k: np.asarray(v, np.float32) for k, v in outs.items()}
        except (ValueError, TypeError):
            raise ServingError(f"{self.describe()}: outputs are not rectangular numeric "
                               "arrays") from None


def _error_detail(raw: bytes) -> str:
    try:
        msg = json.loads(raw).get("error", "")
    except (ValueError, AttributeError):
        msg = raw[:200].decode("utf-8", "replace")
    return " ".join(str(msg).split()) or "(no body)"


class GrpcClient(_Client):
    """TF Serving gRPC client (``tensorflow-serving-api``): ``PredictionService/Predict``.

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
        self._channel = grpc.insecure_channel(self.target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def describe(self) -> str:
        return f"TF Serving gRPC {self.target} model {self.model_name!r}"

    def close(self):
        self._channel.close()

    def _predict_batch(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        req = predict_pb2.PredictRequest()
        req.model_spec.name = self.model_name
        req.model_spec.signature_name = self.signature_name
        if self.version is not None:
            req.model_spec.version.value = int(self.version)
        req.inputs["image"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.uint8))
        grpc = self._grpc

        def call():
            try:
                return self._stub.Predict(req, timeout=self.timeout)
            except grpc.RpcError as err:
                code = err.code()
                detail = " ".join(str(err.details()).split())
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.RESOURCE_EXHAUSTED):
                    raise _Transient(f"{code.name}: {detail}") from None
                raise ServingError(f"{self.describe()} answered {code.name}: {detail}") from None

        reply = self._with_retries(call, self.describe())
        return {k: tf.make_ndarray(v) for k, v in reply.outputs.items()}


def make_client(url: str, model_name: Optional[str] = None, **kw) -> _Client:
    """A :class:`RestClient` for ``http(s)://`` URLs, a :class:`GrpcClient` for ``grpc://``."""
    scheme, netloc, name, version = parse_url(url, model_name)
    kw.setdefault("version", version)
    if scheme == "grpc":
        return GrpcClient(netloc, name, **kw)
    return RestClient(f"{scheme}://{netloc}", name, **kw)
