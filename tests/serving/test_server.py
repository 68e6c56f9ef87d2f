"""`textrnn serve-model`, started for real on a free local port: its predictions, its refusals, its swaps
of a new bundle and its shutdown. Predictions are compared with an in-process `Predictor`."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from textrnn.io import atomic_dir
from textrnn.predict import Predictor
from textrnn.serving import prediction_json

EDGE_TEXTS = ["这本书太好了，非常喜欢！", "质量太差 3.5 分，不推荐", "Ｈｅｌｌｏ <b>world</b> www.x.cn", "好" * 3000]


def expected_rows(predictor: Predictor, texts: list) -> list[dict]:
    return [prediction_json(p) for p in predictor.predict(texts)]


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["reason"] == w["reason"]
        if w["probabilities"] is None:
            assert g == w
            continue
        assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-5)
        if abs(max(w["probabilities"].values()) - 0.5) > 1e-4:  # a near-tie may go either way by 1e-7
            assert g["label"] == w["label"]


def shifted_bundle(source: Path, target: Path, shift: float) -> Path:
    """A copy of `source` whose model adds `shift` to the first class's logit: a different model."""
    shutil.copytree(source, target)
    model = onnx.load(target / "model.onnx")
    model.graph.output[0].name = "logits"
    for node in model.graph.node:
        node.output[:] = ["logits_raw" if name == "logits" else name for name in node.output]
    labels = len(json.loads((source / "labels.json").read_text()))
    bias = np.zeros(labels, np.float32)
    bias[0] = shift
    model.graph.initializer.append(numpy_helper.from_array(bias, "logit_shift"))
    model.graph.node.append(helper.make_node("Add", ["logits_raw", "logit_shift"], ["logits"]))
    onnx.save(model, target / "model.onnx")
    return target


def put_bundle(source: Path, target: Path) -> None:
    """Publish `source` at `target` as an export does: written beside, then renamed into place."""
    with atomic_dir(target) as tmp:
        for item in source.iterdir():
            shutil.copyfile(item, tmp / item.name)


@pytest.fixture(scope="module")
def predictor(bundle) -> Predictor:
    return Predictor(bundle, threads=1)


@pytest.fixture(scope="module")
def server(bundle, servers, tmp_path_factory):
    return servers(bundle, tmp_path_factory.mktemp("server") / "server.log", "--max-texts", "300",
                   "--max-bytes", "200000", "--threads", "1")


def test_predictions_equal_the_predictors_in_one_request_and_in_concurrent_ones(server, predictor, test_texts):
    texts = test_texts[:200] + EDGE_TEXTS
    status, body = server.predict({"texts": texts})
    assert status == 200
    want = expected_rows(predictor, texts)
    assert_same_rows(body["predictions"], want)
    status, bare = server.predict(texts[:5])  # a bare array is the same request
    assert status == 200 and bare["predictions"] == body["predictions"][:5]

    # One text per request from 16 clients at once: the batcher groups them; each gets its own row.
    got: dict[int, dict] = {}

    def client(rows: range) -> None:
        for i in rows:
            status, answer = server.predict([texts[i]])
            assert status == 200
            got[i] = answer["predictions"][0]

    threads = [threading.Thread(target=client, args=(range(k, len(texts), 16),)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_same_rows([got[i] for i in range(len(texts))], want)


def test_rows_that_cannot_be_predicted_get_a_reason_beside_the_others(server, predictor):
    body = '{"texts": ["好书", "", "   ", null, "bad \\ud800 escape", "BYTES", "差"]}'.encode()
    body = body.replace(b"BYTES", b"bad \xff\xfe bytes")  # not UTF-8, inside a string
    status, answer = server.request("POST", "/v1/predict", body)
    assert status == 200
    reasons = [row["reason"] for row in answer["predictions"]]
    assert reasons == [None, "empty", "empty", "empty", "bad_utf8", "bad_utf8", None]
    assert_same_rows([answer["predictions"][i] for i in (0, 6)], expected_rows(predictor, ["好书", "差"]))
    assert answer["predictions"][1] == {"label": None, "probabilities": None, "reason": "empty"}


BAD_REQUESTS = [
    (b'{"texts": ["a", ', 400, "invalid_json"),
    (b"not json at all", 400, "invalid_json"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
    (b'{"texts": "one text"}', 422, "wrong_type"),
    (b'{"texts": ["ok", 3]}', 422, "wrong_type"),
    (b'{"texts": [["nested"]]}', 422, "wrong_type"),
    (b'"just a string"', 422, "wrong_type"),
    (b'{"text": ["typo"]}', 422, "unknown_field"),
    (b'{}', 422, "missing_field"),
    (json.dumps({"texts": ["x"] * 301}).encode(), 413, "too_many_texts"),
    (json.dumps({"texts": ["很长" * 50_000]}, ensure_ascii=False).encode(), 413, "too_many_bytes"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_REQUESTS, ids=[c for _, _, c in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_with_a_json_reason_and_the_server_goes_on(server, body, status, code):
    got, answer = server.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
    assert (got, answer["error"]["code"]) == (status, code)
    assert answer["error"]["message"]
    assert server.request("GET", "/healthz")[0] == 200


def test_a_body_over_the_limit_is_refused_when_it_comes_without_a_declared_length(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (b'{"texts": ["' + b"a" * 10_000 + b'", ' for _ in range(30))
    connection.request("POST", "/v1/predict", body=chunks, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["code"] == "too_many_bytes"
    connection.close()


def test_unknown_paths_and_methods_get_json_errors(server):
    assert server.request("GET", "/v2/nothing") == (404, {"error": {"code": "not_found",
                                                                   "message": "GET /v2/nothing: Not Found"}})
    status, answer = server.request("GET", "/v1/predict")
    assert status == 405 and answer["error"]["code"] == "method_not_allowed"


def test_model_and_health_endpoints_describe_the_bundle(server, bundle, predictor):
    status, info = server.request("GET", "/v1/model")
    assert status == 200
    config = json.loads((bundle / "config.json").read_text())
    assert info["labels"] == predictor.labels
    assert info["metrics"] == json.loads((bundle / "metrics.json").read_text())
    assert info["vocab_digest"] == config["vocab_digest"] == predictor.vocab.digest
    assert info["exported_at"].endswith("+00:00") and info["model"] == config["model"]
    status, health = server.request("GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["last_reload_error"] is None
    assert health["model_sha256"] == info["model_sha256"]


def test_binding_to_loopback_by_default(server):
    assert server.process.poll() is None
    assert "listening on http://127.0.0.1:" in server.log_text()


def _load(server, texts: list[str], stop: threading.Event, seen: list) -> None:
    """A client posting `texts` until `stop`, keeping every (status, answer)."""
    while not stop.is_set():
        seen.append(server.predict({"texts": texts}))


def test_sighup_swaps_in_a_new_bundle_under_load_and_no_request_sees_a_mix(bundle, servers, tmp_path, test_texts):
    live = tmp_path / "export"
    shutil.copytree(bundle, live)
    texts = test_texts[:24]
    old_rows = expected_rows(Predictor(live), texts)
    first = json.loads((bundle / "labels.json").read_text())[0]
    mostly_first = sum(r["label"] == first for r in old_rows) * 2 > len(old_rows)
    new = shifted_bundle(bundle, tmp_path / "new", shift=-8.0 if mostly_first else 8.0)  # flips most rows
    new_rows = expected_rows(Predictor(new), texts)
    assert [r["label"] for r in old_rows] != [r["label"] for r in new_rows]
    server = servers(live, tmp_path / "server.log", "--threads", "1")
    old_tag = server.request("GET", "/healthz")[1]["model_sha256"]
    stop, seen = threading.Event(), []
    clients = [threading.Thread(target=_load, args=(server, texts, stop, seen)) for _ in range(4)]
    for client in clients:
        client.start()
    time.sleep(0.5)
    put_bundle(new, live)
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while server.request("GET", "/healthz")[1]["model_sha256"] == old_tag and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    for client in clients:
        client.join()
    tags = {}
    for status, answer in seen:
        assert status == 200
        want = old_rows if answer["model"]["model_sha256"] == old_tag else new_rows
        assert_same_rows(answer["predictions"], want)  # each answer wholly by the model it names
        tags[answer["model"]["model_sha256"]] = tags.get(answer["model"]["model_sha256"], 0) + 1
    assert len(tags) == 2 and all(tags.values()), tags
    assert seen[-1][1]["model"]["model_sha256"] != old_tag
    assert server.request("GET", "/healthz")[1]["swaps"] == 1


def test_a_watched_bundle_is_swapped_in_and_a_broken_one_is_refused(bundle, servers, tmp_path, test_texts):
    live = tmp_path / "export"
    shutil.copytree(bundle, live)
    new = shifted_bundle(bundle, tmp_path / "new", shift=-4.0)
    broken = shutil.copytree(new, tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    server = servers(live, tmp_path / "server.log", "--watch", "0.2", "--threads", "1")
    first = server.request("GET", "/healthz")[1]

    def wait_for(condition) -> dict:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = server.request("GET", "/healthz")[1]
            if condition(health):
                return health
            time.sleep(0.1)
        raise AssertionError(f"no change within 30 s: {health}")

    put_bundle(new, live)
    swapped = wait_for(lambda h: h["model_sha256"] != first["model_sha256"])
    assert swapped["last_reload_error"] is None and swapped["swaps"] == 1
    status, answer = server.predict({"texts": test_texts[:10]})
    assert_same_rows(answer["predictions"], expected_rows(Predictor(new), test_texts[:10]))

    put_bundle(broken, live)  # the new model keeps serving; /healthz says why the reload failed
    failed = wait_for(lambda h: h["last_reload_error"] is not None)
    assert failed["model_sha256"] == swapped["model_sha256"] and "cannot load the bundle" in failed["last_reload_error"]
    status, again = server.predict({"texts": test_texts[:10]})
    assert status == 200 and again["predictions"] == answer["predictions"]


def test_sigterm_answers_the_request_in_flight_then_stops(bundle, servers, tmp_path):
    server = servers(bundle, tmp_path / "server.log")
    body = json.dumps({"texts": ["好书", "差评"]}, ensure_ascii=False).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", "/v1/predict")
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body[:5])  # the request is under way when the signal comes
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    connection.send(body[5:])
    response = connection.getresponse()
    assert response.status == 200 and len(json.loads(response.read())["predictions"]) == 2
    assert server.process.wait(30) in (0, -signal.SIGTERM)
    assert "shut down" in server.log_text()
    with pytest.raises(OSError):
        server.request("GET", "/healthz")


def test_a_bundle_that_cannot_be_served_stops_the_server_at_once_with_a_reason(tmp_path):
    (tmp_path / "export").mkdir()
    run = subprocess.run([sys.executable, "-m", "textrnn.cli", "serve-model", "--model", str(tmp_path / "export"),
                          "--port", "0"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "export" in run.stderr


def test_the_server_without_compiled_kernels_predicts_the_same(bundle, servers, tmp_path, predictor, test_texts):
    server = servers(bundle, tmp_path / "server.log", "--threads", "1", env={"TEXTRNN_PURE": "1"})
    texts = test_texts[:100] + EDGE_TEXTS
    status, answer = server.predict({"texts": texts})
    assert status == 200
    assert_same_rows(answer["predictions"], expected_rows(predictor, texts))


TRAINING_STACK = ("torch", "prefect", "prefect_dask", "dask", "distributed", "dvc", "pandas", "sklearn", "onnx",
                  "onnxscript", "snownlp", "matplotlib", "jieba", "tqdm")


def test_predicting_and_serving_work_with_the_training_stack_unimportable(bundle, tmp_path):
    # As in a light installation: every package of the training stack and the compiled kernels raise
    # ImportError (pyarrow then also skips pandas, which it loads whenever it is installed). Predict,
    # build the app, load a model holder and parse the CLI; nothing may need them.
    code = f"""
import sys
class Unavailable:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TRAINING_STACK!r} or name == "textrnn._kernels":
            raise ImportError("not installed here: " + name)
sys.meta_path.insert(0, Unavailable())
import textrnn.cli, textrnn.predict_io
from pathlib import Path
from textrnn import Predictor, kernels
from textrnn.serving import create_app
from textrnn.serving_model import ModelHolder
from textrnn.serving_settings import ServerSettings
assert not kernels.COMPILED
print(Predictor({str(bundle)!r}).predict(["好书", ""])[1].reason)
create_app(ServerSettings(model=Path({str(bundle)!r})), ModelHolder(Path({str(bundle)!r})))
textrnn.cli.build_parser().parse_args(["serve-model"])
print("loaded:", [m for m in {TRAINING_STACK!r} if m in sys.modules])
"""
    # An empty build cache: a light installation has no build of the kernels anywhere to borrow.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["empty", "loaded: []"]


def test_a_keep_alive_client_is_not_held_up_by_delayed_acks(server):
    # Without TCP_NODELAY on the accepted sockets, each answer (headers and body written apart) waited
    # for the client's delayed ACK: about 40 ms a request on Linux, whatever the work.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        connection.request("POST", "/v1/predict", b'{"texts": ["good"]}')
        response = connection.getresponse()
        assert response.status == 200
        response.read()
        times.append(time.perf_counter() - start)
    connection.close()
    assert sorted(times)[10] < 0.02, times


def test_the_explain_flag_adds_each_rows_top_units_as_predictor_explain_gives_them(server, predictor):
    texts = ["这本书太好了，非常喜欢", "", "质量太差"]
    status, answer = server.predict({"texts": texts, "explain": 2})
    assert status == 200
    want = predictor.explain(texts)
    rows = answer["predictions"]
    assert rows[1]["explanation"] is None and rows[1]["reason"] == "empty"
    for row, explanation in zip([rows[0], rows[2]], [want[0], want[2]]):
        assert list(row["explanation"]) == predictor.labels
        for label in predictor.labels:
            got, expected = row["explanation"][label], explanation.top(2)[label]
            assert [unit for unit, _ in got] == [unit for unit, _ in expected]
            assert [c for _, c in got] == pytest.approx([c for _, c in expected], abs=1e-5)
    status, plain = server.predict({"texts": texts, "explain": False})
    assert "explanation" not in plain["predictions"][0]
    status, refused = server.predict({"texts": texts, "explain": "yes"})
    assert status == 422 and refused["error"]["code"] == "wrong_type"
    status, refused = server.predict({"texts": ["好"] * 33, "explain": True})
    assert status == 413 and "explain" in refused["error"]["message"]
