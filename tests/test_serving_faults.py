"""Fault tests of the serving path: every bad request, answer or flag gets a clean, bounded error.

The development server (tests.dev_server) must answer each bad
request with an HTTP status and a JSON ``{"error": ...}`` and never touch a path
outside its base; the client must turn every transport failure into a
one-line ``ServingError`` within its total deadline; ``pipelines.attack_served``
must print one line and exit 2. Each test is one distinct bad input.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import keras
import numpy as np
import pytest

from bridging_tf.export import export_encoder
from bridging_tf.models import build_backbone
from bridging_tf.serving import RestClient, ServingError, make_client, parse_url
from tests.dev_server import DevServer

SHAPE = (12, 12, 3)
MEAN, STD = (0.5, 0.4, 0.3), (0.5, 0.5, 0.25)


# --------------------------------------------------------------------------- fixtures / helpers

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """``<root>/models/enc/1`` served; a decoy SavedModel at ``<root>/1`` (= ``models/../1``)."""
    keras.utils.set_random_seed(0)
    net = build_backbone("simple_conv", num_classes=4, variant="end", width=0.125,
                         input_shape=SHAPE)
    root = tmp_path_factory.mktemp("serving_faults")
    models = root / "models"
    export_encoder(net, models, "enc", mean=MEAN, std=STD, version=1)
    shutil.copytree(models / "enc" / "1", root / "1")  # what `..` would load
    (root / "models" / "enc" / "abc").mkdir()  # not a version: never listed
    return models


@pytest.fixture(scope="module")
def server(base):
    with DevServer(base, max_body_bytes=1 << 20, socket_timeout=3) as srv:
        yield srv


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def _raw(server, data: bytes, *, half_close=False, timeout=10.0):
    """Send ``data`` on a fresh socket; ``(status, json body, seconds)`` of the answer."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/"), f"no HTTP status in the answer: {buf[:200]!r}"
    return int(head.split()[1]), json.loads(body), time.monotonic() - start


def _post(server, body, path="/v1/models/enc:predict", headers=None):
    """A well-formed POST of ``body`` (bytes or a JSON-able object)."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    hdrs = {"Content-Length": str(len(body)), "Content-Type": "application/json",
            **(headers or {})}
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None) + "\r\n"
    return _raw(server, head.encode("latin-1") + body)


def _get(server, path):
    return _raw(server, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode("latin-1"))


def _assert_error(answer, code, pattern=None):
    status, body, _ = answer
    assert status == code, (status, body)
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    if pattern:
        assert pattern.lower() in body["error"].lower(), body["error"]


def _good_inputs(n=1):
    return {"inputs": {"image": _images(n).tolist()}}


# --------------------------------------------------------------------------- control

def test_a_good_request_is_answered(server):
    status, body, _ = _post(server, _good_inputs(2))
    assert status == 200 and np.asarray(body["outputs"]["bottleneck"]).shape[0] == 2
    status, body, _ = _post(server, {"instances": [{"image": _images(1)[0].tolist()}]})
    assert status == 200 and len(body["predictions"]) == 1
    status, body, _ = _get(server, "/v1/models/enc")
    assert status == 200 and [v["version"] for v in body["model_version_status"]] == ["1"]


def test_edge_values_0_and_255_are_accepted(server):
    x = np.zeros((1, *SHAPE), np.uint8).tolist()
    x[0][0][0] = [0, 255, 255.0]  # an integral float is an exact uint8
    status, _, _ = _post(server, {"inputs": {"image": x}})
    assert status == 200


# --------------------------------------------------------------------------- names, versions, paths

def test_dotdot_model_name_is_refused_and_the_decoy_outside_base_is_not_loaded(server):
    _assert_error(_post(server, _good_inputs(), path="/v1/models/..:predict"), 400,
                  "invalid model name")
    assert not server.models._cache or all(k[0] == "enc" for k in server.models._cache)


def test_dotdot_status_does_not_list_the_base_parent(server):
    _assert_error(_get(server, "/v1/models/.."), 400, "invalid model name")


def test_dotdot_then_version_path_is_refused(server):
    status, body, _ = _get(server, "/v1/models/../1")
    assert status in (400, 404) and "error" in body
    status, body, _ = _post(server, _good_inputs(), path="/v1/models/../1:predict")
    assert status in (400, 404) and "error" in body


def test_non_numeric_version_is_400(server):
    _assert_error(_post(server, _good_inputs(), path="/v1/models/enc/versions/abc:predict"),
                  400, "invalid version")
    _assert_error(_get(server, "/v1/models/enc/versions/abc"), 400, "invalid version")


def test_negative_version_is_400(server):
    _assert_error(_post(server, _good_inputs(), path="/v1/models/enc/versions/-1:predict"),
                  400, "invalid version")


def test_non_ascii_digit_version_is_400(server):
    path = "/v1/models/enc/versions/\u0661:predict"  # ARABIC-INDIC DIGIT ONE: isdigit() is True
    body = json.dumps(_good_inputs()).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode("utf-8")
    _assert_error(_raw(server, head + body), 400, "invalid version")


def test_percent_encoded_dotdot_is_refused(server):
    _assert_error(_post(server, _good_inputs(), path="/v1/models/%2e%2e:predict"), 400,
                  "invalid model name")


def test_slash_in_model_name_is_refused(server):
    status, body, _ = _post(server, _good_inputs(), path="/v1/models/enc/1:predict")
    assert status == 404 and "error" in body


def test_unknown_version_is_404_and_a_non_version_folder_is_not_listed(server):
    _assert_error(_post(server, _good_inputs(), path="/v1/models/enc/versions/7:predict"), 404,
                  "servable not found")
    _assert_error(_get(server, "/v1/models/enc/versions/7"), 404, "servable not found")


def test_unknown_model_is_404(server):
    _assert_error(_post(server, _good_inputs(), path="/v1/models/nope:predict"), 404)


def test_unknown_verb_is_400(server):
    _assert_error(_post(server, _good_inputs(), path="/v1/models/enc:classify"), 400,
                  "only :predict")


def test_other_path_is_404(server):
    _assert_error(_get(server, "/etc/passwd"), 404)


def test_put_is_405_with_json(server):
    _assert_error(_raw(server, b"PUT /v1/models/enc HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
                  405)


def test_garbage_request_line_gets_a_json_400(server):
    _assert_error(_raw(server, b"HELLO\r\n\r\n"), 400)


# --------------------------------------------------------------------------- Content-Length

def test_negative_content_length_is_400_and_the_body_is_not_read(server):
    answer = _raw(server, b"POST /v1/models/enc:predict HTTP/1.1\r\nContent-Length: -1\r\n\r\n"
                  + b"[" * 1000)
    _assert_error(answer, 400, "negative")


def test_non_numeric_content_length_is_400(server):
    _assert_error(_post(server, _good_inputs(), headers={"Content-Length": "abc"}), 400,
                  "not a number")


def test_content_length_with_a_sign_or_hex_is_400(server):
    _assert_error(_post(server, _good_inputs(), headers={"Content-Length": "+10"}), 400)
    _assert_error(_post(server, _good_inputs(), headers={"Content-Length": "0x10"}), 400)


def test_missing_content_length_with_a_body_is_411(server):
    body = json.dumps(_good_inputs()).encode()
    _assert_error(_raw(server, b"POST /v1/models/enc:predict HTTP/1.1\r\n\r\n" + body), 411)


def test_chunked_transfer_encoding_is_411(server):
    _assert_error(_raw(server, b"POST /v1/models/enc:predict HTTP/1.1\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
                  411)


def test_conflicting_content_lengths_are_400(server):
    body = b'{"inputs": []}'
    head = (b"POST /v1/models/enc:predict HTTP/1.1\r\nContent-Length: 14\r\n"
            b"Content-Length: 4\r\n\r\n")
    _assert_error(_raw(server, head + body), 400, "conflicting")


def test_content_length_over_the_cap_is_413_without_waiting_for_the_body(server):
    # 1 GB announced, nothing sent: the answer must come at once (the body is never read).
    head = b"POST /v1/models/enc:predict HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n"
    answer = _raw(server, head)
    _assert_error(answer, 413, "exceeds")
    assert answer[2] < 2.5  # the drain gives up after 1 s; reading 1 GB would hang


def test_a_thirty_digit_content_length_is_413(server):
    head = b"POST /v1/models/enc:predict HTTP/1.1\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\n"
    _assert_error(_raw(server, head), 413)


def test_body_shorter_than_content_length_is_400(server):
    head = b"POST /v1/models/enc:predict HTTP/1.1\r\nContent-Length: 500\r\n\r\n"
    _assert_error(_raw(server, head + b'{"inputs": ', half_close=True), 400, "ended after")


def test_a_client_body_over_the_cap_gets_413_as_a_serving_error(base):
    with DevServer(base, max_body_bytes=2000) as small:
        with pytest.raises(ServingError, match="HTTP 413.*exceeds") as err:
            RestClient(small.url, "enc", retries=0).embed(_images(2))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- malformed bodies

def test_json_array_body_is_400(server):
    _assert_error(_post(server, [1, 2, 3]), 400, "json object")


def test_instances_that_are_a_number_are_400(server):
    _assert_error(_post(server, {"instances": 5}), 400, "instances")


def test_signature_name_that_is_a_list_is_400(server):
    _assert_error(_post(server, {"signature_name": ["serving_default"], **_good_inputs()}), 400,
                  "signature_name")


def test_unknown_signature_is_400(server):
    _assert_error(_post(server, {"signature_name": "train", **_good_inputs()}), 400, "not found")


def test_deeply_nested_json_is_400(server):
    _assert_error(_post(server, b'{"inputs": ' + b"[" * 200000 + b"]" * 200000 + b"}"), 400,
                  "nested")


def test_invalid_json_is_400(server):
    _assert_error(_post(server, b'{"inputs": [1, 2'), 400, "json parse error")


def test_invalid_utf8_body_is_400(server):
    _assert_error(_post(server, b'{"inputs": "\xff\xfe"}'), 400, "json parse error")


def test_empty_body_is_400(server):
    _assert_error(_post(server, b""), 400)


def test_both_inputs_and_instances_are_400(server):
    _assert_error(_post(server, {"instances": [], **_good_inputs()}), 400, "exactly one")


def test_neither_inputs_nor_instances_is_400(server):
    _assert_error(_post(server, {"signature_name": "serving_default"}), 400, "exactly one")


def test_unknown_input_name_is_400(server):
    _assert_error(_post(server, {"inputs": {"pixels": _images(1).tolist()}}), 400, "image")


def test_instances_mixing_objects_and_arrays_are_400(server):
    row = _images(1)[0].tolist()
    _assert_error(_post(server, {"instances": [{"image": row}, row]}), 400, "every instance")


def test_ragged_image_is_400(server):
    x = _images(1).tolist()
    x[0][0] = x[0][0][:-1]
    _assert_error(_post(server, {"inputs": {"image": x}}), 400, "rectangular")


def test_wrong_image_shape_is_400(server):
    _assert_error(_post(server, {"inputs": {"image": np.zeros((1, 5, 5, 3), int).tolist()}}),
                  400, "shape")


def test_inputs_that_are_a_string_are_400(server):
    _assert_error(_post(server, {"inputs": "image"}), 400, "list or an object")


# --------------------------------------------------------------------------- values vs uint8

def _with_value(value):
    """A valid 1-image request with one pixel replaced by ``value`` (as JSON text)."""
    x = np.zeros((1, *SHAPE), np.uint8).tolist()
    x[0][0][0][0] = "@@"
    text = json.dumps({"inputs": {"image": x}}).replace('"@@"', value)
    return text.encode()


@pytest.mark.parametrize("value, why", [
    ("256", "range"), ("-256", "range"), ("-1", "range"), ("NaN", "nan"),
    ("Infinity", "infinite"), ("-Infinity", "infinite"), ("1e999", "infinite"),
    ("1.5", "non-integer"), ('"12"', "non-numeric"), ("true", "booleans"),
    ("null", "rectangular"), (str(2 ** 70), "rectangular"), ("{}", "rectangular")])
def test_values_outside_uint8_are_400(server, value, why):
    _assert_error(_post(server, _with_value(value)), 400, why)


# --------------------------------------------------------------------------- a misbehaving server

class FaultServer:
    """127.0.0.1 TCP server answering each request with ``respond(conn)``; counts connections."""

    def __init__(self, respond):
        self.respond, self.connections = respond, 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")]
            while length and len(body) < length[0]:
                body += conn.recv(65536)
            self.respond(conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _reply(status=200, body=b"", headers=None):
    def respond(conn):
        hdrs = {"Content-Length": str(len(body)), **(headers or {})}
        head = f"HTTP/1.1 {status} X\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None) + "\r\n"
        conn.sendall(head.encode() + body)
    return respond


def _client(url, **kw):
    kw = {"retries": 2, "backoff": 0.01, "timeout": 2.0, **kw}
    return RestClient(url, "enc", **kw)


def _outputs(n=2, value=0.5):
    return json.dumps({"outputs": {"bottleneck": [[value] * 4] * n}}).encode()


def test_fault_server_control_a_good_answer_is_used():
    with FaultServer(_reply(body=_outputs())) as fs:
        assert _client(fs.url).embed(_images(2)).shape == (2, 4)


def test_incomplete_read_is_a_retried_serving_error():
    def respond(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + _outputs()[:20])
    with FaultServer(respond) as fs:
        with pytest.raises(ServingError, match="cut short.*gave up after 3 tries") as err:
            _client(fs.url).embed(_images(2))
        assert fs.connections == 3 and "\n" not in str(err.value)


def test_chunked_answer_cut_short_is_a_retried_serving_error():
    def respond(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n{\"out")
    with FaultServer(respond) as fs:
        with pytest.raises(ServingError, match="cut short.*gave up after 2 tries"):
            _client(fs.url, retries=1).embed(_images(2))
        assert fs.connections == 2


def test_remote_disconnect_without_answer_is_a_retried_serving_error():
    with FaultServer(lambda conn: None) as fs:
        with pytest.raises(ServingError, match="closed the connection.*gave up after 3 tries"):
            _client(fs.url).embed(_images(2))
        assert fs.connections == 3


def test_connection_reset_is_a_retried_serving_error():
    import struct

    def respond(conn):  # SO_LINGER 0: close() sends RST
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with FaultServer(respond) as fs:
        with pytest.raises(ServingError, match="(reset|closed the connection).*gave up after"):
            _client(fs.url).embed(_images(2))
        assert fs.connections == 3


def test_malformed_json_answer_is_a_serving_error_not_retried():
    with FaultServer(_reply(body=b'{"outputs": {"bottleneck": [[0.1, ')) as fs:
        with pytest.raises(ServingError, match="not JSON"):
            _client(fs.url).embed(_images(2))
        assert fs.connections == 1


def test_deeply_nested_json_answer_is_a_serving_error():
    with FaultServer(_reply(body=b"[" * 100000 + b"]" * 100000)) as fs:
        with pytest.raises(ServingError, match="nested too deeply"):
            _client(fs.url).embed(_images(2))


def test_json_array_answer_is_a_serving_error():
    with FaultServer(_reply(body=b"[1, 2]")) as fs:
        with pytest.raises(ServingError, match="JSON list, not an object"):
            _client(fs.url).embed(_images(2))


def test_non_http_answer_is_a_serving_error():
    with FaultServer(lambda conn: conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")) as fs:
        with pytest.raises(ServingError, match="not valid HTTP"):
            _client(fs.url).embed(_images(2))


def test_announced_response_over_the_cap_is_refused_at_once():
    def respond(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n{")
        time.sleep(3)
    with FaultServer(respond) as fs:
        start = time.monotonic()
        with pytest.raises(ServingError, match="over max_response_bytes=4096"):
            _client(fs.url, max_response_bytes=4096).embed(_images(2))
        assert time.monotonic() - start < 2


def test_unannounced_response_over_the_cap_is_refused():
    def respond(conn):  # no Content-Length: streams until closed
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        for _ in range(100):
            conn.sendall(b" " * 65536)
    with FaultServer(respond) as fs:
        with pytest.raises(ServingError, match="more than max_response_bytes=100000"):
            _client(fs.url, max_response_bytes=100000).embed(_images(2))


def test_a_server_dribbling_headers_hits_the_total_deadline():
    def respond(conn):  # one byte every 0.1 s: each read succeeds, the whole never ends
        for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 200:
            conn.sendall(bytes([b]))
            time.sleep(0.1)
    with FaultServer(respond) as fs:
        start = time.monotonic()
        with pytest.raises(ServingError, match="timed out after 0.5s.*gave up after 2 tries"):
            _client(fs.url, timeout=0.5, retries=1).embed(_images(2))
        assert time.monotonic() - start < 2.5


def test_a_server_dribbling_the_body_hits_the_total_deadline():
    def respond(conn):
        body = _outputs()
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for b in body:
            conn.sendall(bytes([b]))
            time.sleep(0.1)
    with FaultServer(respond) as fs:
        start = time.monotonic()
        with pytest.raises(ServingError, match="timed out after 0.5s"):
            _client(fs.url, timeout=0.5, retries=0).embed(_images(2))
        assert time.monotonic() - start < 1.5


def test_http_429_is_retried():
    with FaultServer(_reply(429, b'{"error": "slow down"}')) as fs:
        with pytest.raises(ServingError, match="HTTP 429: slow down.*gave up after 3 tries"):
            _client(fs.url).embed(_images(2))
        assert fs.connections == 3


def test_http_redirect_is_a_serving_error_not_followed():
    with FaultServer(_reply(301, b"", {"Location": "http://example.com/"})) as fs:
        with pytest.raises(ServingError, match="HTTP 301"):
            _client(fs.url).embed(_images(2))
        assert fs.connections == 1


def test_nan_embeddings_are_a_serving_error():
    with FaultServer(_reply(body=_outputs(value=float("nan")))) as fs:
        with pytest.raises(ServingError, match="NaN or infinite"):
            _client(fs.url).embed(_images(2))


def test_predictions_that_are_not_a_list_are_a_serving_error():
    with FaultServer(_reply(body=b'{"predictions": 3}')) as fs:
        with pytest.raises(ServingError, match="'predictions' is a int"):
            _client(fs.url).embed(_images(2))


def test_the_call_deadline_bounds_all_batches_and_retries(base):
    with DevServer(base, delay_s=0.4) as slow:
        client = RestClient(slow.url, "enc", batch_size=1, timeout=5, deadline=1.0)
        start = time.monotonic()
        with pytest.raises(ServingError, match="deadline of 1s"):
            client.embed(_images(6))
        assert time.monotonic() - start < 2.0


# --------------------------------------------------------------------------- client arguments

def test_url_with_non_numeric_version_is_a_serving_error():
    with pytest.raises(ServingError, match="version 'abc' is not a number"):
        parse_url("http://h:1/v1/models/enc/versions/abc")


def test_url_with_dotdot_model_is_a_serving_error():
    with pytest.raises(ServingError, match="not a model name"):
        parse_url("http://h:1/v1/models/..")


def test_url_with_bad_port_is_a_serving_error():
    with pytest.raises(ServingError, match="port"):
        parse_url("http://h:abc/v1/models/enc")


def test_url_with_an_unknown_path_is_a_serving_error():
    with pytest.raises(ServingError, match="the path must be"):
        parse_url("http://h:1/v2/enc")


def test_model_name_disagreeing_with_the_url_is_a_serving_error():
    with pytest.raises(ServingError, match="disagrees"):
        parse_url("http://h:1/v1/models/enc", "other")


def test_version_disagreeing_with_the_url_is_a_serving_error():
    with pytest.raises(ServingError, match="disagrees"):
        make_client("http://h:1/v1/models/enc/versions/2", version=3)
    assert make_client("http://h:1/v1/models/enc/versions/2").version == 2


def test_model_name_with_a_slash_is_refused_before_any_request():
    with pytest.raises(ServingError, match="not a model name"):
        RestClient("http://127.0.0.1:1", "../enc")


@pytest.mark.parametrize("kw", [{"timeout": 0}, {"timeout": float("nan")},
                                {"timeout": float("inf")}, {"retries": -1},
                                {"batch_size": 0}, {"max_response_bytes": 0},
                                {"backoff": -1.0}, {"version": -1}, {"retries": float("inf")},
                                {"batch_size": 2.5}])
def test_bad_client_settings_are_serving_errors(kw):
    with pytest.raises(ServingError):
        RestClient("http://127.0.0.1:1", "enc", **kw)


# --------------------------------------------------------------------------- gRPC server faults

def test_grpc_server_refuses_bad_names_dtypes_and_values(base):
    pytest.importorskip("tensorflow_serving",
        reason="needs tensorflow-serving-api: the [test]/[serving] extras install it")
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.dev_server import DevGrpcServer

    def request(name="enc", tensor=None):
        req = predict_pb2.PredictRequest()
        req.model_spec.name = name
        req.inputs["image"].CopyFrom(tensor if tensor is not None else
                                     tf.make_tensor_proto(_images(1), dtype=tf.uint8))
        return req

    with DevGrpcServer(base) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert "bottleneck" in stub.Predict(request(), timeout=20).outputs
            cases = [(request(".."), "INVALID_ARGUMENT"),
                     (request("nope"), "NOT_FOUND"),
                     (request(tensor=tf.make_tensor_proto(_images(1).astype(np.float32))),
                      "INVALID_ARGUMENT"),
                     (request(tensor=tf.make_tensor_proto(np.zeros((1, 5, 5, 3), np.uint8))),
                      "INVALID_ARGUMENT")]
            for req, code in cases:
                with pytest.raises(grpc.RpcError) as err:
                    stub.Predict(req, timeout=20)
                assert err.value.code().name == code, (req.model_spec.name, err.value.details())
                assert "\n" not in err.value.details()


# --------------------------------------------------------------------------- the CLI

def _cli(capsys, *args):
    from pipelines.attack_served import main
    code = main(["attack_served", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_url_with_version_abc_is_one_line_exit_2(capsys):
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1/v1/models/enc/versions/abc")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and "version 'abc'" in err and "Traceback" not in err


def test_cli_server_down_is_one_line_exit_2(capsys):
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1/v1/models/enc", "--retries=0",
                        "--timeout=1")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot connect" in err, err


def test_cli_timeout_nan_is_one_line_exit_2(capsys):
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1/v1/models/enc", "--timeout=nan")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "timeout" in err, err


def test_cli_from_run_missing_folder_is_one_line_exit_2(capsys, tmp_path):
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1", f"--from_run={tmp_path / 'nope'}")
    assert code == 2 and "no such folder" in err and len(err.strip().splitlines()) == 1


def test_cli_from_run_on_a_folder_that_is_not_a_run_is_one_line_exit_2(capsys, tmp_path):
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1", f"--from_run={tmp_path}")
    assert code == 2 and "not a pipelines.run folder" in err, err


def test_cli_from_run_with_corrupt_metadata_is_one_line_exit_2(capsys, tmp_path):
    (tmp_path / "run_metadata.json").write_text('{"flags": ')
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1", f"--from_run={tmp_path}")
    assert code == 2 and "not readable JSON" in err and len(err.strip().splitlines()) == 1


def test_cli_from_run_with_a_dataset_flag_is_one_line_exit_2(capsys, tmp_path):
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1", f"--from_run={tmp_path}",
                        "--train_size=10000")
    assert code == 2 and "--from_run takes --train_size" in err, err


def test_cli_unknown_protocol_is_one_line_exit_2(capsys):
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1/v1/models/enc",
                        "--attack_protocol=both")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "attack_protocol" in err, err


def _fake_run(tmp_path, dataset="biased_mnist", data_dir="/nonexistent/mnist"):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(
        {"name": dataset, "options": {"data_dir": data_dir, "seed": 0}, "prepared": False}))
    (tmp_path / "run_metadata.json").write_text(json.dumps(
        {"flags": {"dataset": dataset, "method": "end", "seed": 0, "attacks": "linear"}}))
    return tmp_path


def test_cli_from_run_whose_data_folder_is_gone_is_one_line_exit_2(capsys, tmp_path):
    run = _fake_run(tmp_path)
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1", f"--from_run={run}")
    assert code == 2 and "data folder /nonexistent/mnist is gone" in err, err
    assert len(err.strip().splitlines()) == 1


def test_cli_from_run_with_an_unknown_dataset_is_one_line_exit_2(capsys, tmp_path):
    run = _fake_run(tmp_path, dataset="cifar", data_dir=str(tmp_path))
    code, _, err = _cli(capsys, "--url=http://127.0.0.1:1", f"--from_run={run}")
    assert code == 2 and "--dataset='cifar' is not known" in err, err


def test_read_run_takes_model_name_and_options_from_the_run(tmp_path):
    from pipelines.attack_served import read_run
    run = _fake_run(tmp_path, data_dir=str(tmp_path))
    (run / "serving").mkdir()
    (run / "serving" / "serving.json").write_text(json.dumps({"model_name": "m1", "version": 1}))
    job = read_run(run)
    assert job["dataset"] == "biased_mnist" and job["options"]["data_dir"] == str(tmp_path)
    assert job["model_name"] == "m1" and job["attacks"] == ["linear"] and job["seed"] == 0
