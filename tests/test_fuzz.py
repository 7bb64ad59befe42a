"""Fuzzing the HTTP surface (issue "Proof under load and faults").

1. schemathesis, in-process over WSGI, against the document the app serves at
   GET /openapi.json: every operation, positive and negative generation, with
   the checks ``not_a_server_error``, ``status_code_conformance``,
   ``content_type_conformance`` and ``response_schema_conformance``. Three
   runs: anonymous (tokens configured, none or the wrong kind sent: every
   protected operation refuses with 401 and nothing in the store or Redis
   changes), API off (no tokens configured: 403, nothing changes) and
   authenticated (the right token for each operation, webhooks signed).
2. hypothesis over both webhook receivers: random bodies, content types,
   event names, delivery ids and signature/token/Standard Webhooks headers.
   Unsigned requests are 401 and change nothing (every table's rows, Redis);
   signed ones are either recorded exactly once (2xx) or a 4xx with the JSON
   error shape and no change.

GitHub, GitLab and the OIDC issuers point at a loopback port that refuses
connections, so whatever reaches out fails at once (502/503, never 500).

The number of cases each test ran is printed (straight to the terminal, even
without ``-s``), by generation mode or signature validity and status. Example
budgets scale with ORGSYNC_FUZZ_SCALE (default 1; halved on PostgreSQL).

Bugs the fuzz found are pinned by the test_regression_* regression tests at
the end; their inputs are part of the random generation too.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import string
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import fakeredis
import pytest
import redis as redis_lib
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import Engine

from tests.fuzz_helpers import (
    ADMIN_TOKEN,
    GITHUB_OTHER_SECRET,
    GITHUB_SECRET,
    GITLAB_SIGNING,
    GITLAB_TOKEN,
    SERVICE_TOKEN,
    FuzzApp,
    Tally,
    build,
    closed_port,
    offline_settings,
    seed,
)
from webhooks.openapi import build_openapi

SCALE = float(os.environ.get("ORGSYNC_FUZZ_SCALE", "1") or 1)
# The default run fuzzes at a quarter depth; the `deep` marker (deselected by
# default, run by .ci/run) at full depth.
QUICK_DEPTH = 0.25


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "depth" in metafunc.fixturenames:
        metafunc.parametrize("depth", [pytest.param(QUICK_DEPTH, id="quick"),
                                       pytest.param(1.0, id="deep", marks=pytest.mark.deep)])


def budget(n: int, db_url: str = "", depth: float = 1.0) -> int:
    # PostgreSQL round trips cost more: half the examples there.
    factor = 0.5 if db_url.startswith("postgresql") else 1.0
    return max(1, int(n * SCALE * depth * factor))


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]

# 502/503 are what the provider or issuer being unreachable looks like (and
# status_code_conformance still requires them to be documented); 500 never is.
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", 502, 503]}}})

FUZZ_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
    "print_blob": True,
}


@pytest.fixture
def port() -> Iterator[int]:
    with closed_port() as p:
        yield p


@pytest.fixture
def redis_conn() -> redis_lib.Redis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


Report = Callable[[str], None]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """Write a line straight to the terminal (shown even without ``-s``).

    Not capsys: the app factory configures logging once per process, and a
    handler bound to a capsys stream would write to a closed file later."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        if reporter is None or capture is None:  # pragma: no cover - plugins disabled
            print(f"[fuzz] {line}")
            return
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(f"[fuzz] {line}")

    return write


# =========================================================================== 1. schemathesis

DOC = build_openapi()
OPERATIONS = [(method.upper(), path, op.get("security"))
              for path, item in DOC["paths"].items() for method, op in item.items()]


def _token_kind(security: list[dict[str, Any]] | None) -> str | None:
    names = {name for req in security or [] for name in req}
    if "adminToken" in names:
        return "admin"
    if "serviceToken" in names:
        return "service"
    return None


def _operation(fa: FuzzApp, method: str, path: str) -> Any:
    """The operation as schemathesis loads it from the app's /openapi.json."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fa.app, config=CONFIG)
    return schema[path][method]


def _strategies(op: Any, fixed: list[dict[str, Any]] | None = None) -> Any:
    options = [op.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    # Operations without parameters or body have nothing to negate.
    if op.definition.raw.get("parameters") or op.definition.raw.get("requestBody"):
        options.append(op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    for kwargs in fixed or []:
        options.append(op.as_strategy(generation_mode=GenerationMode.POSITIVE, **kwargs))
    return st.one_of(options)


def _mode(case: Any) -> str:
    meta = getattr(case, "meta", None)
    return "negative" if meta is not None and meta.generation.mode.is_negative else "positive"


def _sent_auth(resp: Any) -> str | None:
    return resp.request.headers.get("Authorization")


ROUTER_404 = "The requested URL was not found on the server."  # werkzeug's NotFound text


@pytest.mark.parametrize(("method", "path", "security"), OPERATIONS,
                         ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
@pytest.mark.parametrize("tokens", ["configured", "api_off"])
def test_schemathesis_anonymous(
    engine: Engine, redis_conn: redis_lib.Redis, db_url: str, port: int, report: Report,
    method: str, path: str, security: list[dict[str, Any]] | None, tokens: str, depth: float,
) -> None:
    """No valid credential: protected operations refuse (401, or 403 with the
    API off), webhooks 401, OIDC 400/401; the store and Redis never change."""
    overrides = ({"admin_tokens": (ADMIN_TOKEN,), "service_tokens": (SERVICE_TOKEN,)}
                 if tokens == "configured" else {})
    fa = build(engine, redis_conn, offline_settings(db_url, port, **overrides))
    refs = seed(fa)
    op = _operation(fa, method, path)
    kind = _token_kind(security)
    # With the API on, also present the other API's token and near misses of
    # the right one; none of them may open the door.
    wrong = [None, "Bearer " + (SERVICE_TOKEN if kind == "admin" else ADMIN_TOKEN),
             "Bearer " + (ADMIN_TOKEN if kind == "admin" else SERVICE_TOKEN)[:-1],
             "Bearer " + (ADMIN_TOKEN if kind == "admin" else SERVICE_TOKEN) + "x",
             "Basic " + (ADMIN_TOKEN if kind == "admin" else SERVICE_TOKEN),
             (ADMIN_TOKEN if kind == "admin" else SERVICE_TOKEN)]
    fixed = [{"path_parameters": {"ref": r}} for r in (refs["github_ws"], refs["github_name"])] \
        if "{ref}" in path else []
    if "{id}" in path:
        fixed = [{"path_parameters": {"id": "dlv-failed"}}]
    tally = Tally()
    before = fa.snapshot()

    @settings(max_examples=budget(60 if tokens == "configured" else 25, db_url, depth), **FUZZ_SETTINGS)
    @given(case=_strategies(op, fixed), auth=st.sampled_from(wrong))
    def run(case: Any, auth: str | None) -> None:
        headers = {"Authorization": auth} if auth is not None and kind is not None else None
        resp = case.call(headers=headers)
        case.validate_response(resp, checks=CHECKS)
        status = resp.status_code
        tally.add(f"{_mode(case)}:{status}")
        if kind is not None:
            if status == 404:
                # Only the router may answer 404 before the token check: the
                # path did not match a route (e.g. an empty or slashed ref).
                body = resp.json()
                assert body["error"] == "not_found" and body["message"].startswith(ROUTER_404), resp.text
            else:
                expected = 401 if tokens == "configured" else 403
                assert status == expected, (status, resp.text)
        elif path.startswith("/webhooks/"):
            assert status in (401, 413), (status, resp.text)
        elif path == "/v1/oidc/resolve":
            assert status in (400, 401, 413), (status, resp.text)
        else:
            assert status == 200, (status, resp.text)
        assert fa.snapshot() == before, f"{case.method} {case.formatted_path} changed the store or Redis"

    run()
    report(tally.line(f"schemathesis anonymous/{tokens} {method} {path}"))


def _platform_cases(path: str, refs: dict[str, str]) -> list[dict[str, Any]]:
    """Platform API operations reach their rules only with real users, tokens
    and ids: the seeded managed workspace, invitation and request, each acting
    user (owner, pending requester, admin, a provider reference)."""
    names = set(re.findall(r"{(\w+)}", path))
    takes_user = any(p.get("name") == "X-Orgsync-User"
                     for item in DOC["paths"][path].values() for p in item.get("parameters", []))
    if not takes_user and not names & {"user", "token", "invitation_id", "request_id"}:
        return []
    params = {"ref": refs["team"], "user": "dave", "token": refs["token"],
              "invitation_id": refs["invitation"], "request_id": refs["request"]}
    chosen = {k: v for k, v in params.items() if k in names}
    return [{"path_parameters": chosen, "headers": {"X-Orgsync-User": actor}} if chosen
            else {"headers": {"X-Orgsync-User": actor}}
            for actor in ("alice", refs["bob"], "dave", "github:501")]


@pytest.mark.parametrize(("method", "path", "security"), OPERATIONS,
                         ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_schemathesis_authenticated(
    engine: Engine, redis_conn: redis_lib.Redis, db_url: str, port: int, report: Report,
    method: str, path: str, security: list[dict[str, Any]] | None, depth: float,
) -> None:
    """The right token for every operation (webhooks correctly signed): no
    5xx, and every answer is one the document describes."""
    fa = build(engine, redis_conn, offline_settings(
        db_url, port, admin_tokens=(ADMIN_TOKEN,), service_tokens=(SERVICE_TOKEN,)))
    refs = seed(fa)
    op = _operation(fa, method, path)
    kind = _token_kind(security)
    fixed: list[dict[str, Any]] = []
    if "{ref}" in path:
        fixed += [{"path_parameters": {"ref": r}} for r in
                  (refs["github_ws"], refs["github_name"], refs["gitlab_ws"], "github:38302899", "alice")]
    if "{id}" in path:
        fixed += [{"path_parameters": {"id": d}} for d in ("dlv-failed", "dlv-ignored")]
    if path.endswith("/transfer"):
        fixed += [{"path_parameters": {"ref": refs["github_ws"]}, "body": {"to": to}}
                  for to in ("alice", "bob", refs["bob"], "nobody")]
    if path.endswith("/subscription"):
        fixed += [{"path_parameters": {"ref": refs["github_ws"]}, "body": {"plan": p}} for p in ("pro", None)]
    if path == "/v1/admin/resync":
        fixed += [{"body": {"target": t}} for t in ("all", refs["github_name"], "nope")]
    fixed += _platform_cases(path, refs)
    token = {"admin": ADMIN_TOKEN, "service": SERVICE_TOKEN}.get(kind or "")
    tally = Tally()

    @settings(max_examples=budget(80, db_url, depth), **FUZZ_SETTINGS)
    @given(case=_strategies(op, fixed))
    def run(case: Any) -> None:
        headers: dict[str, str] = {}
        extra: dict[str, Any] = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if path.startswith("/webhooks/"):
            # Sign the exact bytes that will be sent.
            kw = case.as_transport_kwargs()
            body = json.dumps(kw["json"]) if "json" in kw else kw.get("data", b"")
            if isinstance(body, dict):  # a form: send the bytes it encodes to
                body = urlencode(body, doseq=True)
            body = body.encode() if isinstance(body, str) else (body or b"")
            extra["data"] = body
            if path == "/webhooks/github":
                headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(
                    GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
            else:
                headers["X-Gitlab-Token"] = GITLAB_TOKEN
        resp = case.call(headers=headers or None, **extra)
        case.validate_response(resp, checks=CHECKS)
        tally.add(f"{_mode(case)}:{resp.status_code}")
        if token is not None and _mode(case) == "positive":
            assert _sent_auth(resp) == f"Bearer {token}"
            assert resp.status_code not in (401, 403) or resp.json().get("error") not in (
                "unauthorized", f"{kind}_api_disabled"), resp.text

    run()
    report(tally.line(f"schemathesis authenticated {method} {path}"))


# =========================================================================== 2. webhook fuzz

# Inputs that once caused 500s (pinned by test_regression_*): "²" and "①" pass
# str.isdigit() but not int(); ids beyond BIGINT; NUL, which PostgreSQL refuses.
INT64 = (-(2**63), 2**63 - 1)


def texts(max_size: int, **kwargs: Any) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size, **kwargs)


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], percent: int) -> st.SearchStrategy[Any]:
    """``common`` about ``percent``% of the time (and what shrinking goes to)."""
    return st.integers(0, 99).flatmap(lambda n: common if n < percent else rare)


HEADER_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
header_text = st.text(HEADER_CHARS, max_size=60)
any_int = st.integers()
ids = (
    st.sampled_from([38302899, 100, 1, 0, -1, INT64[0], INT64[1]])  # seeded orgs, edges
    | any_int | st.integers(0, 2**31)
    | st.sampled_from(["38302899", "100", "١٢", "0x10", "", " 5", "1e3", "-1"])
    | texts(8) | st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["²", "①", "9" * 40, 2**63, -(2**63) - 1, 10**30])
)
json_leaf = (st.none() | st.booleans() | any_int | st.floats(allow_nan=False, allow_infinity=False)
             | texts(20))
any_json = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4)
                        | st.dictionaries(texts(10), kids, max_size=4), max_leaves=12)


@st.composite
def github_payload(draw: st.DrawFn) -> dict[str, Any]:
    """Shapes the triage reads (organization, installation, membership, account),
    with ids and logins of every type and size."""
    login = draw(st.sampled_from(["Octocoders", "alice", ""]) | texts(12) | ids)
    org = {"id": draw(ids), "login": login}
    payload: dict[str, Any] = {}
    if draw(st.booleans()):
        payload["action"] = draw(st.sampled_from(
            ["member_added", "member_removed", "member_invited", "renamed", "created", "deleted",
             "suspend", "unsuspend", "added", "removed", "edited", "new_permissions_accepted"])
            | texts(10) | json_leaf)
    if draw(st.booleans()):
        payload["organization"] = draw(st.just(org) | any_json)
    if draw(st.booleans()):
        payload["installation"] = draw(st.fixed_dictionaries(
            {"id": ids}, optional={"account": st.fixed_dictionaries(
                {"id": ids, "login": texts(8) | ids},
                optional={"type": st.sampled_from(["Organization", "User"]) | json_leaf}),
                "target_type": st.sampled_from(["Organization", "User"]) | json_leaf}) | any_json)
    if draw(st.booleans()):
        payload["membership"] = draw(st.fixed_dictionaries(
            {"user": st.fixed_dictionaries({"id": ids, "login": texts(8) | ids}) | any_json},
            optional={"role": st.sampled_from(["admin", "member"]) | json_leaf,
                      "state": st.sampled_from(["active", "pending"]) | json_leaf}) | any_json)
    if draw(st.booleans()):
        payload["member"] = draw(st.fixed_dictionaries({"id": ids, "login": texts(8)}) | any_json)
    if draw(st.booleans()):
        payload["sender"] = draw(st.fixed_dictionaries({"id": ids, "login": texts(8)}) | any_json)
    if draw(st.booleans()):
        payload["changes"] = draw(any_json)
    payload.update(draw(st.dictionaries(texts(8), any_json, max_size=3)))
    return payload


@st.composite
def gitlab_payload(draw: st.DrawFn) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for key, values in (
        ("event_name", st.sampled_from(["user_add_to_group", "user_remove_from_group", "user_update_for_group",
                                        "group_rename", "group_destroy", "user_rename", "user_destroy",
                                        "subgroup_create", "project_create"]) | texts(10)
         | json_leaf),
        ("object_kind", st.sampled_from(["group_member", "push"]) | json_leaf),
        ("group_id", ids), ("user_id", ids), ("parent_group_id", ids),
        ("group_path", texts(10) | json_leaf), ("full_path", texts(10) | json_leaf),
        ("path", texts(10) | json_leaf), ("username", texts(10) | json_leaf),
        ("user_username", texts(10) | json_leaf),
        ("group_access", st.sampled_from(["Guest", "Developer", "Maintainer", "Owner"]) | json_leaf),
    ):
        if draw(st.booleans()):
            payload[key] = draw(values)
    payload.update(draw(st.dictionaries(texts(8), any_json, max_size=3)))
    return payload


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False).encode()


@st.composite
def body_and_type(draw: st.DrawFn, payloads: st.SearchStrategy[dict[str, Any]]) -> tuple[bytes, str | None]:
    shape = draw(mostly(st.just("payload"), st.sampled_from(["json", "bytes", "form", "text"]), 60))
    if shape == "payload":
        body = _json_bytes(draw(payloads))
    elif shape == "json":
        body = _json_bytes(draw(any_json))
    elif shape == "bytes":
        body = draw(st.binary(max_size=300))
    elif shape == "text":
        body = draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    else:
        fields = draw(st.lists(st.tuples(st.sampled_from(["payload", "other", "payload[]", ""]) | texts(5),
                                         texts(30) | payloads.map(json.dumps)), max_size=4))
        body = urlencode(fields).encode()
    if shape == "form":
        default = "application/x-www-form-urlencoded"
    elif shape == "bytes":
        default = "application/octet-stream"
    else:
        default = "application/json"
    ctype = draw(mostly(st.just(default), st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded",
         "APPLICATION/JSON", "text/plain", "multipart/form-data; boundary=x", "application/vnd.github+json",
         None]) | header_text, 75))
    return body, ctype


GITHUB_EVENTS = ["organization", "membership", "member", "installation", "installation_target",
                 "installation_repositories", "team", "ping", "push", "github_app_authorization", "repository"]
DELIVERY_POOL = [str(uuid.UUID(int=i)) for i in range(4)]
_fresh = itertools.count()


def delivery_ids() -> st.SearchStrategy[str | None]:
    """Mostly a new id each time; else ids seen before (duplicates) and bad ones."""
    fresh = st.builds(lambda: f"fuzz-{next(_fresh)}-{uuid.uuid4()}")
    odd = (st.sampled_from(DELIVERY_POOL) | header_text | st.none() | st.just("")
           | st.text(string.ascii_letters + string.digits + string.punctuation + " ", min_size=190, max_size=210))
    return mostly(fresh, odd, 70)


def _gh_sig(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@st.composite
def github_signature(draw: st.DrawFn, body: bytes) -> tuple[str | None, bool]:
    """(X-Hub-Signature-256 value, whether it is valid for ``body``)."""
    how = draw(mostly(st.sampled_from(["valid", "rotated", "upper_hex", "padded"]), st.sampled_from(
        ["missing", "unconfigured_secret", "other_body", "truncated", "random_hex", "garbage", "sha1",
         "no_prefix", "empty"]), 55))
    good = _gh_sig(body, GITHUB_SECRET)
    if how == "valid":
        return good, True
    if how == "rotated":
        return _gh_sig(body, GITHUB_OTHER_SECRET), True
    if how == "upper_hex":
        # Hex is case-insensitive; the same digest spelled in capitals.
        return "sha256=" + good[7:].upper(), True
    if how == "padded":
        # Surrounding whitespace is not part of the value (RFC 9110 5.5).
        return " " + good + " ", True
    if how == "missing":
        return None, False
    if how == "unconfigured_secret":
        other_secret = draw(st.text(min_size=1, max_size=20).filter(
            lambda s: s not in (GITHUB_SECRET, GITHUB_OTHER_SECRET)))
        return _gh_sig(body, other_secret), False
    if how == "other_body":
        other = draw(st.binary(max_size=50).filter(lambda b: b != body))
        return _gh_sig(other, GITHUB_SECRET), False
    if how == "truncated":
        return good[: draw(st.integers(0, len(good) - 1))], False
    if how == "random_hex":
        return "sha256=" + draw(st.binary(min_size=32, max_size=32)).hex(), False
    if how == "sha1":
        return "sha1=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha1).hexdigest(), False
    if how == "no_prefix":
        return good[7:], False
    if how == "empty":
        return "", False
    return draw(header_text), False


def _check_error_shape(resp: Any) -> None:
    body = resp.get_json(silent=True)
    assert isinstance(body, dict) and set(body) == {"error", "message"}, (resp.status_code, resp.data[:300])
    assert isinstance(body["error"], str) and isinstance(body["message"], str)


def _check_outcome(fa: FuzzApp, resp: Any, before: tuple[dict[str, int], str, dict[str, Any]],
                   authentic: bool, tally: Tally, kind: str) -> None:
    status = resp.status_code
    tally.add(f"{kind}:{status}")
    assert status < 500, (status, resp.data[:500])
    counts_before, _, redis_before = before
    if not authentic:
        assert status == 401, (status, resp.data[:300])
        _check_error_shape(resp)
        assert fa.snapshot() == before, "an unauthenticated request changed the store or Redis"
        return
    if 400 <= status < 500:
        _check_error_shape(resp)
        assert fa.snapshot() == before, f"a refused request ({status}) changed the store or Redis"
        return
    assert status in (200, 202), (status, resp.data[:300])
    answer = resp.get_json()
    assert {"delivery", "status"} <= set(answer) <= {"delivery", "status", "reason"}, answer
    delivery_id, outcome = answer["delivery"], answer["status"]
    counts_after = fa.counts()
    expected = dict(counts_before)
    if outcome == "duplicate":
        assert status == 200
    else:
        assert (status, outcome) in ((202, "queued"), (202, "ignored"), (200, "pong")), answer
        expected["deliveries"] += 1  # recorded exactly once
    assert counts_after == expected, (answer, counts_before, counts_after)
    from models.tables import Delivery

    with fa.runtime.session() as s:
        row = s.get(Delivery, delivery_id)
        assert row is not None, answer
        if outcome != "duplicate":
            assert row.status in ("received", "ignored"), row.status
    redis_after = fa.redis_state()
    queue_key = "rq:queue:webhooks"
    queued_before = redis_before.get(queue_key, ("list", 0))[1]
    queued_after = redis_after.get(queue_key, ("list", 0))[1]
    if outcome == "queued":
        # One wake-up per lane: queued now, or already pending for the lane.
        assert queued_before <= queued_after <= queued_before + 1
        assert row.org_key and fa.redis.get(f"orgsync:wake:{row.org_key}") is not None
    else:
        assert queued_after == queued_before, (answer, queued_before, queued_after)


@pytest.fixture
def webhook_app(engine: Engine, redis_conn: redis_lib.Redis, db_url: str, port: int) -> FuzzApp:
    fa = build(engine, redis_conn, offline_settings(
        db_url, port, github_webhook_secrets=(GITHUB_SECRET, GITHUB_OTHER_SECRET)))
    seed(fa)
    return fa


def test_fuzz_github_webhook(webhook_app: FuzzApp, db_url: str, report: Report, depth: float) -> None:
    fa = webhook_app
    tally = Tally()
    examples = budget(400, db_url, depth)

    @settings(max_examples=examples, **FUZZ_SETTINGS)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        body, ctype = data.draw(body_and_type(github_payload()), label="body")
        signature, authentic = data.draw(github_signature(body), label="signature")
        event = data.draw(mostly(st.sampled_from(GITHUB_EVENTS), header_text | st.none(), 85), label="event")
        delivery = data.draw(delivery_ids(), label="delivery")
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature,
                   "Content-Type": ctype, "User-Agent": "GitHub-Hookshot/fuzz"}
        headers.update(data.draw(st.dictionaries(
            st.sampled_from(["X-Hub-Signature", "X-GitHub-Hook-ID", "X-Forwarded-For", "Content-Encoding"]),
            header_text, max_size=2), label="extra headers"))
        before = fa.snapshot()
        resp = fa.client.post("/webhooks/github", data=body,
                              headers={k: v for k, v in headers.items() if v is not None})
        _check_outcome(fa, resp, before, authentic, tally, "signed" if authentic else "unsigned")

    run()
    report(tally.line("webhook fuzz POST /webhooks/github"))
    assert tally.total >= examples * 0.9


def _std_sig(body: bytes, msg_id: str, ts: str, secret: str = GITLAB_SIGNING) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@st.composite
def gitlab_auth(draw: st.DrawFn, body: bytes, token_on: bool, signing_on: bool) -> tuple[dict[str, str | None], bool]:
    """GitLab's authentication headers and whether they are valid for the app's configuration."""
    headers: dict[str, str | None] = {}
    token_how = draw(mostly(st.just("right"), st.sampled_from(
        ["wrong", "wrong_length", "prefix", "missing", "empty", "case"]), 70))
    headers["X-Gitlab-Token"] = {
        "right": GITLAB_TOKEN,
        "wrong": "x" * len(GITLAB_TOKEN),
        "wrong_length": draw(header_text.filter(lambda t: t.strip() != GITLAB_TOKEN)),
        "prefix": GITLAB_TOKEN[:-1],
        "missing": None,
        "empty": "",
        "case": GITLAB_TOKEN.upper(),
    }[token_how]
    token_ok = token_how == "right"
    sig_how = draw(mostly(st.sampled_from(["valid", "rotation_list"]), st.sampled_from(
        ["missing", "old", "future", "not_a_number", "other_secret", "other_body", "other_id", "v2", "garbage",
         "truncated", "no_id"]), 70))
    now = int(time.time())
    msg_id = draw(st.text(string.ascii_letters + string.digits + "_-.", min_size=1, max_size=30))
    # Offsets stay clear of the 300 s edge so that the test clock cannot race the app's.
    ts = now + draw(st.integers(-280, 280))
    sig = _std_sig(body, msg_id, str(ts))
    sig_ok = False
    if sig_how == "valid":
        sig_ok = True
    elif sig_how == "rotation_list":
        sig = f"v1,{base64.b64encode(b'x' * 32).decode()} {sig}"
        sig_ok = True
    elif sig_how == "missing":
        sig = None
    elif sig_how in ("old", "future"):
        ts = now + (1 if sig_how == "future" else -1) * draw(st.integers(320, 10**9))
        sig = _std_sig(body, msg_id, str(ts))
    elif sig_how == "not_a_number":
        raw = draw(header_text.filter(lambda t: not t.strip().lstrip("+-").isdigit()))
        headers.update({"webhook-id": msg_id, "webhook-timestamp": raw,
                        "webhook-signature": _std_sig(body, msg_id, raw)})
    elif sig_how == "other_secret":
        sig = _std_sig(body, msg_id, str(ts), "whsec_" + base64.b64encode(b"k" * 24).decode())
    elif sig_how == "other_body":
        sig = _std_sig(body + b" ", msg_id, str(ts))
    elif sig_how == "other_id":
        sig = _std_sig(body, msg_id + "x", str(ts))
    elif sig_how == "v2":
        sig = "v2," + sig[3:]
    elif sig_how == "garbage":
        sig = draw(header_text)
    elif sig_how == "truncated":
        sig = sig[: draw(st.integers(0, len(sig) - 1))]
    elif sig_how == "no_id":
        headers.update({"webhook-timestamp": str(ts), "webhook-signature": sig})
    if sig_how not in ("not_a_number", "no_id"):
        headers.update({"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig})
    authentic = (token_ok or not token_on) and (sig_ok or not signing_on)
    return headers, authentic


GITLAB_HOOKS = ["Member Hook", "Subgroup Hook", "System Hook", "Project Hook", "Push Hook", "Group Hook"]
GITLAB_CONFIGS = {
    "token": (True, False, 300),
    "token+signing": (True, True, 200),
    "signing_only": (False, True, 100),
}


@pytest.mark.parametrize("config", list(GITLAB_CONFIGS))
def test_fuzz_gitlab_webhook(engine: Engine, redis_conn: redis_lib.Redis, db_url: str, port: int,
                             report: Report, config: str, depth: float) -> None:
    token_on, signing_on, examples = GITLAB_CONFIGS[config]
    examples = budget(examples, db_url, depth)
    fa = build(engine, redis_conn, offline_settings(
        db_url, port, gitlab_webhook_secrets=(GITLAB_TOKEN,) if token_on else (),
        gitlab_webhook_signing_secret=GITLAB_SIGNING if signing_on else None))
    seed(fa)
    tally = Tally()

    @settings(max_examples=examples, **FUZZ_SETTINGS)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        body, ctype = data.draw(body_and_type(gitlab_payload()), label="body")
        auth, authentic = data.draw(gitlab_auth(body, token_on, signing_on), label="auth")
        headers: dict[str, str | None] = {
            "Content-Type": ctype,
            "X-Gitlab-Event": data.draw(mostly(st.sampled_from(GITLAB_HOOKS), header_text | st.none(), 85),
                                        label="hook"),
            "Idempotency-Key": data.draw(delivery_ids(), label="idempotency key"),
            "X-Gitlab-Event-UUID": data.draw(delivery_ids(), label="event uuid"),
            "User-Agent": "GitLab/fuzz",
            **auth,
        }
        before = fa.snapshot()
        resp = fa.client.post("/webhooks/gitlab", data=body,
                              headers={k: v for k, v in headers.items() if v is not None})
        _check_outcome(fa, resp, before, authentic, tally, "signed" if authentic else "unsigned")

    run()
    report(tally.line(f"webhook fuzz POST /webhooks/gitlab ({config})"))
    assert tally.total >= examples * 0.9


# =========================================================================== bugs the fuzz found
# Each test below pins one bug down with a minimal input (all fixed; these
# are the regression tests). What each was:
#
# Bug 1 (both databases): sync/events.py _int() accepts any str.isdigit()
#   string, which includes "²" and "①"; int() then raises ValueError. A
#   signed webhook naming such an org/installation/group/user id answers 500.
# Bug 2 (both databases): ids outside BIGINT (|id| >= 2**63, as a JSON number
#   or a digit string) reach SQL: SQLite raises OverflowError, PostgreSQL a
#   DataError. Same webhooks, 500.
# Bug 3 (PostgreSQL): a signed webhook whose "action" (GitHub) or
#   "event_name"/"object_kind" (GitLab) holds U+0000 is stored as
#   deliveries.action: psycopg DataError "PostgreSQL text fields cannot
#   contain NUL (0x00) bytes", 500.
# Bug 4 (both databases): models/store.py find_workspace() takes
#   "github:<rest>" with rest.isdigit() to int(rest): "github:²" raises
#   ValueError, "github:<20+ digits>" overflows in SQL. Every endpoint taking
#   a workspace reference answers 500 (authenticated callers only).
# Bug 5 (PostgreSQL): U+0000 in a workspace reference, a user reference
#   ("to"), a resync target or a delivery id reaches a query: psycopg
#   DataError, 500 (authenticated callers only).
# Bug 6 (document): /openapi.json marks the X-Gitlab-Event header optional
#   ("required": false) but POST /webhooks/gitlab answers 400 missing_header
#   without it.

WEBHOOK_ID_BUG = ("bugs 1/2: sync/events.py _int() lets '²' and ids outside BIGINT through; a signed webhook "
                  "answers 500")
NUL_BUG = "bugs 3/5: U+0000 reaches a PostgreSQL text column or query parameter; 500"
REF_BUG = "bug 4: models/store.py find_workspace() int()s 'github:²' and overflows on 'github:<20+ digits>'; 500"

GITHUB_BUG_PAYLOADS = {
    "org id '²'": {"action": "member_added", "organization": {"id": "²", "login": "x"}},
    "installation id '①'": {"action": "created", "installation": {"id": "①"}},
    "org id 2**63": {"action": "member_added", "organization": {"id": 2**63, "login": "x"}},
    "installation id -2**63-1": {"action": "created", "installation": {"id": -(2**63) - 1}},
    "org id 40 digits as text": {"action": "member_added", "organization": {"id": "9" * 40, "login": "x"}},
}
GITLAB_BUG_PAYLOADS = {
    "group id '²'": {"event_name": "user_add_to_group", "group_id": "²", "user_id": 1},
    "user id '²' (user_rename)": {"event_name": "user_rename", "user_id": "²", "username": "x"},
    "group id 2**63": {"event_name": "user_add_to_group", "group_id": 2**63, "user_id": 1},
    "group id 10**30": {"event_name": "group_rename", "group_id": 10**30, "full_path": "x"},
}


def _post_github(fa: FuzzApp, payload: dict[str, Any], event: str) -> Any:
    body = _json_bytes(payload)
    return fa.client.post("/webhooks/github", data=body, headers={
        "Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": _gh_sig(body, GITHUB_SECRET)})


def _post_gitlab(fa: FuzzApp, payload: dict[str, Any], hook: str = "System Hook") -> Any:
    return fa.client.post("/webhooks/gitlab", data=_json_bytes(payload), headers={
        "Content-Type": "application/json", "X-Gitlab-Event": hook, "X-Gitlab-Token": GITLAB_TOKEN,
        "Idempotency-Key": str(uuid.uuid4())})


@pytest.mark.parametrize("payload", list(GITHUB_BUG_PAYLOADS.values()), ids=list(GITHUB_BUG_PAYLOADS))
def test_regression_github_unusable_ids(webhook_app: FuzzApp, payload: dict[str, Any]) -> None:
    before = webhook_app.snapshot()
    resp = _post_github(webhook_app, payload, "installation" if "installation" in payload else "organization")
    _check_outcome(webhook_app, resp, before, True, Tally(), "signed")


@pytest.mark.parametrize("payload", list(GITLAB_BUG_PAYLOADS.values()), ids=list(GITLAB_BUG_PAYLOADS))
def test_regression_gitlab_unusable_ids(webhook_app: FuzzApp, payload: dict[str, Any]) -> None:
    before = webhook_app.snapshot()
    resp = _post_gitlab(webhook_app, payload)
    _check_outcome(webhook_app, resp, before, True, Tally(), "signed")


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_regression_nul_in_action(webhook_app: FuzzApp, request: pytest.FixtureRequest, db_url: str,
                                 provider: str) -> None:
    before = webhook_app.snapshot()
    if provider == "github":
        resp = _post_github(webhook_app, {"action": "\x00"}, "organization")
    else:
        resp = _post_gitlab(webhook_app, {"event_name": "\x00"}, "Member Hook")
    _check_outcome(webhook_app, resp, before, True, Tally(), "signed")


@pytest.fixture
def api_app(engine: Engine, redis_conn: redis_lib.Redis, db_url: str, port: int) -> FuzzApp:
    fa = build(engine, redis_conn, offline_settings(
        db_url, port, admin_tokens=(ADMIN_TOKEN,), service_tokens=(SERVICE_TOKEN,)))
    seed(fa)
    return fa


def _api_requests(ref: str, fa: FuzzApp) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(method, path, token, JSON body) of every operation that takes ``ref``."""
    quoted = quote(ref, safe=":")
    return [
        ("GET", f"/v1/workspaces/{quoted}", SERVICE_TOKEN, None),
        ("GET", f"/v1/workspaces/{quoted}/members", SERVICE_TOKEN, None),
        ("GET", f"/v1/workspaces/{quoted}/activity", SERVICE_TOKEN, None),
        ("POST", "/v1/admin/resync", ADMIN_TOKEN, {"target": ref}),
        ("POST", f"/v1/admin/workspaces/{quoted}/transfer", ADMIN_TOKEN, {"to": "alice"}),
        ("POST", f"/v1/admin/workspaces/{quoted}/disconnect", ADMIN_TOKEN, None),
        ("POST", f"/v1/admin/workspaces/{quoted}/subscription", ADMIN_TOKEN, {"plan": None}),
    ]


def _check_api_refusal(fa: FuzzApp, method: str, path: str, token: str, body: dict[str, Any] | None) -> None:
    before = fa.snapshot()
    resp = fa.client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code < 500, (method, path, body, resp.status_code, resp.data[:200])
    assert 400 <= resp.status_code < 500, (method, path, resp.status_code)
    _check_error_shape(resp)
    assert fa.snapshot() == before


@pytest.mark.parametrize("ref", ["github:²", "gitlab:①", "github:" + "9" * 20], ids=["sup2", "circled1", "20digits"])
def test_regression_api_reference_not_a_usable_number(api_app: FuzzApp, ref: str) -> None:
    failures = []
    for method, path, token, body in _api_requests(ref, api_app):
        try:
            _check_api_refusal(api_app, method, path, token, body)
        except AssertionError as exc:
            failures.append(str(exc)[:200])
    assert not failures, failures


def test_regression_api_nul_in_references(api_app: FuzzApp, request: pytest.FixtureRequest, db_url: str) -> None:
    cases = [*_api_requests("a\x00b", api_app),
             ("POST", f"/v1/admin/workspaces/{api_app.seeded['github_ws']}/transfer", ADMIN_TOKEN, {"to": "a\x00"}),
             ("POST", "/v1/admin/deliveries/a%00b/replay", ADMIN_TOKEN, None)]
    failures = []
    for method, path, token, body in cases:
        try:
            _check_api_refusal(api_app, method, path, token, body)
        except AssertionError as exc:
            failures.append(str(exc)[:200])
    assert not failures, failures


def test_regression_openapi_gitlab_event_header_agrees_with_the_endpoint(webhook_app: FuzzApp) -> None:
    """The document and the endpoint agree on X-Gitlab-Event: if the document
    calls it required, a delivery without it is refused with 400 and changes
    nothing; if it calls it optional, the same delivery is accepted."""
    doc = webhook_app.client.get("/openapi.json").get_json()
    params = doc["paths"]["/webhooks/gitlab"]["post"]["parameters"]
    [event_header] = [p for p in params if p["name"] == "X-Gitlab-Event"]
    body = _json_bytes({"event_name": "user_add_to_group", "group_id": 100, "user_id": 1})
    before = webhook_app.snapshot()
    resp = webhook_app.client.post("/webhooks/gitlab", data=body, headers={
        "Content-Type": "application/json", "X-Gitlab-Token": GITLAB_TOKEN, "Idempotency-Key": str(uuid.uuid4())})
    if event_header.get("required"):
        assert resp.status_code == 400, resp.get_json()
        _check_error_shape(resp)
        assert webhook_app.snapshot() == before
    else:
        assert resp.status_code in (200, 202), resp.get_json()
