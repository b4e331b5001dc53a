"""Schema-driven fuzzing of the playground's HTTP API (schemathesis, from the app's own OpenAPI document).

Every operation of ``/openapi.json`` gets requests that fit its schema (positive) and requests that break it
(negative: wrong types, missing fields, values out of bounds, unknown fields). The properties, whatever the
request:

- no 5xx: bad input is the client's error, never a crash;
- every JSON response is strict JSON (no ``NaN``/``Infinity``, which browsers' ``JSON.parse`` rejects);
- a request that breaks the schema is refused with a 4xx (``negative_data_rejection``: e.g. ``"steps": true``);
- every 4xx of a request body or query names the field: ``detail`` lists each error with its ``loc``, a
  dotted ``field`` and a message, and the one-line ``message`` starts with that field;
- a 200 matches the response schema the document declares (validated by ``jsonschema_rs``, draft 2020-12, the
  dialect of OpenAPI 3.1).

Deterministic (``deterministic=True``: the same requests every run) and short: a few dozen requests per
operation, the whole module well under a minute on two cores.
"""

import json
import math

import jsonschema_rs
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, not_a_server_error

from ravine.web.app import create_app

# the response caches off: every request is computed, so a bug cannot hide behind an earlier answer
APP = create_app(cache_mb=0, run_cache_mb=0)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=25, deterministic=True
)
DOCUMENT = APP.openapi()


def _reject_constant(name: str):
    raise AssertionError(f"response contains the non-JSON constant {name}")


def _response_validator(method: str, path: str):
    """A draft 2020-12 validator of the 200 body that ``DOCUMENT`` declares for the operation (or ``None``)."""
    content = DOCUMENT["paths"][path][method.lower()]["responses"].get("200", {}).get("content", {})
    body = content.get("application/json", {}).get("schema")
    if not body:
        return None
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **body, "components": DOCUMENT["components"]}
    return jsonschema_rs.validator_for(root)


VALIDATORS = {
    (method.upper(), path): _response_validator(method, path)
    for path, item in DOCUMENT["paths"].items()
    for method in item
}


@pytest.mark.timeout(300)
@schema.parametrize()
def test_api_from_its_openapi_document(case):
    response = case.call_and_validate(checks=[not_a_server_error, negative_data_rejection])
    assert response.status_code < 500
    if "application/json" not in response.headers.get("content-type", [""])[0]:
        return
    body = json.loads(response.text, parse_constant=_reject_constant)
    if response.status_code in (404, 405):  # routing (e.g. the fuzzer's unsupported methods): nothing to name
        assert isinstance(body["detail"], str) and body["detail"], body
    elif 400 <= response.status_code < 500:
        detail = body["detail"]
        assert isinstance(detail, list) and detail, body
        for item in detail:
            assert item["field"] and item["msg"] and isinstance(item["loc"], list), item
            # "body" only for the body as a whole (missing, not an object, not JSON); a part is named by its path
            assert item["field"] != "body" or item["loc"] == ["body"], item
        assert body["message"].startswith(detail[0]["field"] + ": "), body
    elif response.status_code == 200:
        validator = VALIDATORS[(case.method.upper(), case.path)]
        if validator is not None:
            errors = [str(e) for e in validator.iter_errors(body)]
            assert not errors, errors[:3]


def test_fuzzed_findings_stay_fixed():
    """What the fuzzer (and issue 15) found, each pinned: a grid of 1 was a 500, not a 422; ``"steps": true``
    and ``"steps": "5"`` were accepted as 1 and 5; ``/api/surface/check`` took a domain of any size; bodies
    that are not JSON got messages that named nothing."""
    from fastapi.testclient import TestClient

    client = TestClient(APP)
    r = client.get("/api/surfaces", params={"grid": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "query.grid"
    assert "grid must be 0 (no grid) or in [2, 300], got 1" in r.json()["message"]
    r = client.post("/api/surface/check", json={"expression": "x", "grid": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "grid"
    for steps in (True, "5", 5.0):
        r = client.post("/api/trajectories", json={"optimizers": [{"name": "gd"}], "steps": steps})
        assert r.status_code == 422, steps
        assert r.json()["message"].startswith("steps: Input should be a valid integer, got "), r.json()
    r = client.post("/api/surface/check", json={"expression": "x", "domain": [[0, 1e5], [0, 1]]})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "domain"
    assert "|bounds| <= 10000" in r.json()["message"]
    # a JSON body sent as text/plain was "Input should be a valid dictionary..., got b'{...}'"
    r = client.post("/api/curvature", content=b'{"point": [0, 0]}', headers={"content-type": "text/plain"})
    assert r.status_code == 422
    assert r.json()["message"] == "body: the body must be a JSON object sent with Content-Type: application/json"
    r = client.post("/api/curvature", content=b"\x80", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"][0]["field"] == "body"
    assert "send a JSON object (UTF-8, Content-Type: application/json)" in r.json()["message"]
    # a schedule the library refuses is a 422 naming schedule (one_cycle's div_factor < 1 bypassed the lr cap)
    r = client.post("/api/trajectories", json={
        "optimizers": [{"name": "gd"}], "schedule": {"name": "one_cycle", "params": {"div_factor": 0.001}},
    })
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "schedule"
    assert "div_factor must be in [1, inf), got 0.001" in r.json()["message"]
    # a start where the loss is not finite is a 422 naming start (was the whole body)
    r = client.post("/api/trajectories", json={
        "optimizers": [{"name": "gd"}], "surface": {"expression": "log(x)"}, "start": [-1, 0],
    })
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "start"
    assert "the loss at start (-1.0, 0.0) is nan" in r.json()["message"]
    ok = client.post("/api/surface/check", json={"expression": "x*y", "domain": [[-1, 1], [0, 3]], "grid": 2})
    assert ok.status_code == 200 and ok.json()["surface"]["grid"]["x"] == [-1.0, 1.0]
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in ok.json()["surface"]["grid"]["x"])
