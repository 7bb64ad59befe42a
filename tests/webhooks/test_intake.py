"""POST /webhooks/github and /webhooks/gitlab: authentication, input
rejection, idempotency, and the durable path when Redis is down.

Every rejected request is checked to change nothing (row counts)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import redis as redis_lib
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from models import deliveries
from models.base import make_engine
from runtime.process import Runtime
from sync.providers.signatures import github_headers, gitlab_headers, sign_github, sign_standard
from tests.app_world import (
    GITHUB_OLD_SECRET,
    GITHUB_SECRET,
    GITLAB_SECRET,
    GITLAB_SIGNING,
    MakeWorld,
    World,
)
from webhooks.app import MAX_BODY, create_app
from worker.jobs import sweep

ORG_ID, ORG_LOGIN = 38302899, "Octocoders"
ORG: dict[str, Any] = {"id": ORG_ID, "login": ORG_LOGIN}
MEMBER_ADDED: dict[str, Any] = {
    "action": "member_added",
    "membership": {"state": "active", "role": "member", "user": {"id": 501, "login": "alice"}},
    "organization": ORG,
    "installation": {"id": 1},
    "sender": {"id": 9, "login": "admin"},
}
GL_MEMBER: dict[str, Any] = {
    "event_name": "user_add_to_group", "group_id": 100, "group_path": "acme",
    "user_id": 64, "user_username": "test_user", "group_access": "Developer",
}


def _connected(world: World) -> str:
    """The org of MEMBER_ADDED, connected, so that the event is acted on."""
    world.server.github.add_org(ORG_ID, ORG_LOGIN, installation_id=1)
    return world.github_workspace(ORG_ID, ORG_LOGIN, installation_id=1)


def _body(payload: dict[str, Any] = MEMBER_ADDED) -> bytes:
    return json.dumps(payload).encode()


# --------------------------------------------------------------------------- GitHub attacks

SIG = "X-Hub-Signature-256"


def _good_sig(body: bytes) -> str:
    return sign_github(body, GITHUB_SECRET)


GITHUB_ATTACKS: list[tuple[str, dict[str, Any], int, str]] = [
    # (case, how to post, status, error code)
    ("missing signature", {"headers": {SIG: None}}, 401, "invalid_signature"),
    ("wrong secret", {"secret": "not-the-secret"}, 401, "invalid_signature"),
    ("garbage signature", {"headers": {SIG: "sha256=zz"}}, 401, "invalid_signature"),
    ("sha1 scheme", {"headers": {SIG: "sha1=" + "0" * 40}}, 401, "invalid_signature"),
    ("truncated signature", {"truncate": 20}, 401, "invalid_signature"),
    ("empty digest", {"headers": {SIG: "sha256="}}, 401, "invalid_signature"),
    ("signature of another body", {"other_body": True}, 401, "invalid_signature"),
    ("old secret after rotation", {"secret": GITHUB_OLD_SECRET}, 401, "invalid_signature"),
    ("wrong content type", {"content_type": "text/plain"}, 415, "unsupported_media_type"),
    ("multipart", {"content_type": "multipart/form-data; boundary=x"}, 415, "unsupported_media_type"),
    ("invalid JSON, valid signature", {"raw": b"{not json"}, 400, "invalid_payload"),
    ("JSON array, valid signature", {"raw": b"[1, 2]"}, 400, "invalid_payload"),
    ("not UTF-8, valid signature", {"raw": b"\xff\xfe{}"}, 400, "invalid_payload"),
    ("form without payload", {"form": {"other": "x"}}, 400, "invalid_payload"),
    ("missing event header", {"headers": {"X-GitHub-Event": None}}, 400, "missing_header"),
    ("missing delivery header", {"headers": {"X-GitHub-Delivery": None}}, 400, "missing_header"),
    ("overlong delivery id", {"headers": {"X-GitHub-Delivery": "x" * 201}}, 400, "invalid_header"),
    ("control chars in delivery id", {"headers": {"X-GitHub-Delivery": "a\tb"}}, 400, "invalid_header"),
]


@pytest.mark.parametrize(("case", "how", "status", "code"), GITHUB_ATTACKS,
                         ids=[a[0] for a in GITHUB_ATTACKS])
def test_github_rejects(world: World, case: str, how: dict[str, Any], status: int, code: str) -> None:
    _connected(world)
    before = world.counts()
    body = how.get("raw", _body())
    headers: dict[str, str | None] = dict(how.get("headers", {}))
    content_type = how.get("content_type")
    if "form" in how:
        body = urlencode(how["form"]).encode()
        content_type = "application/x-www-form-urlencoded"
    if "raw" in how or "form" in how:
        headers.setdefault(SIG, _good_sig(body))
    if "truncate" in how:
        headers[SIG] = _good_sig(body)[: how["truncate"]]
    if how.get("other_body"):
        headers[SIG] = _good_sig(body + b" ")
    resp = world.post_github("organization", body, secret=how.get("secret", GITHUB_SECRET),
                             headers=headers, content_type=content_type)
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["error"] == code
    assert set(resp.get_json()) == {"error", "message"}
    assert world.counts() == before
    assert world.queue().count == 0


def test_github_without_a_configured_secret_accepts_nothing(make_world: MakeWorld) -> None:
    world = make_world(github_webhook_secrets=())
    resp = world.post_github("organization", MEMBER_ADDED, secret="")
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "invalid_signature"
    assert world.counts()["deliveries"] == 0


def test_github_rotation_both_secrets_configured(make_world: MakeWorld) -> None:
    world = make_world(github_webhook_secrets=(GITHUB_SECRET, GITHUB_OLD_SECRET))
    _connected(world)
    for secret in (GITHUB_OLD_SECRET, GITHUB_SECRET):
        resp = world.post_github("organization", MEMBER_ADDED, secret=secret)
        assert resp.status_code == 202, resp.get_json()
        assert resp.get_json()["status"] == "queued"
    # One wake-up for the org's lane: the second delivery joins the first.
    assert world.queue().count == 1
    with world.session() as s:
        assert deliveries.count_deliveries(s, status=deliveries.RECEIVED) == 2


def test_github_oversized_body_is_413_and_records_nothing(world: World) -> None:
    body = b"{" + b" " * MAX_BODY + b"}"
    resp = world.post_github("organization", body, headers={SIG: _good_sig(body)})
    assert resp.status_code == 413
    assert resp.get_json()["error"] == "payload_too_large"
    assert world.counts()["deliveries"] == 0


def test_github_form_encoded_payload_is_accepted(world: World) -> None:
    _connected(world)
    body = urlencode({"payload": json.dumps(MEMBER_ADDED)}).encode()
    resp = world.post_github("organization", body, content_type="application/x-www-form-urlencoded",
                             headers={SIG: _good_sig(body)})
    assert resp.status_code == 202, resp.get_json()
    d = world.delivery(resp.get_json()["delivery"])
    assert d is not None and json.loads(d.payload) == MEMBER_ADDED
    assert d.status == deliveries.RECEIVED


def test_github_accepts_queues_and_answers(world: World) -> None:
    _connected(world)
    resp = world.post_github("organization", MEMBER_ADDED, delivery="d-accept")
    assert resp.status_code == 202
    assert resp.get_json() == {"delivery": "d-accept", "status": "queued"}
    d = world.delivery("d-accept")
    assert d is not None
    assert (d.provider, d.event, d.action, d.status) == ("github", "organization", "member_added", "received")
    assert d.org_key == "github:38302899"
    assert d.hint_user_id == MEMBER_ADDED["membership"]["user"]["id"]  # type: ignore[index]
    assert d.due_at is not None and d.leased_until is None
    jobs = world.queue().get_jobs()
    assert [(j.func_name, j.args) for j in jobs] == [("worker.jobs.drain_lane", ("github:38302899",))]


def test_github_ping_is_200_and_recorded(world: World) -> None:
    resp = world.post_github("ping", {"zen": "Keep it logically awesome.", "hook_id": 1}, delivery="p1")
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "pong"
    assert world.delivery("p1").status == "ignored"  # type: ignore[union-attr]
    assert world.queue().count == 0


@pytest.mark.parametrize(("event", "payload"), [
    ("team", {"action": "created", "team": {"id": 1}, "organization": ORG, "installation": {"id": 1}}),
    ("star", {"action": "created"}),
    ("organization", {"action": "member_invited", "organization": ORG, "installation": {"id": 1},
                      "user": {"id": 5, "login": "bob"}}),
    ("github_app_authorization", {"action": "revoked", "sender": {"id": 5, "login": "bob"}}),
], ids=["team.created", "unknown event", "member_invited", "authorization revoked"])
def test_github_events_not_acted_on_are_recorded_as_ignored(
    world: World, event: str, payload: dict[str, Any]
) -> None:
    _connected(world)
    before = world.counts()
    resp = world.post_github(event, payload, delivery="ign")
    assert resp.status_code == 202
    body = resp.get_json()
    assert (body["delivery"], body["status"]) == ("ign", "ignored") and body["reason"]
    d = world.delivery("ign")
    assert d is not None and d.status == "ignored" and d.outcome["reason"]  # type: ignore[index]
    after = world.counts()
    assert after["deliveries"] == before["deliveries"] + 1
    assert {k: v for k, v in after.items() if k != "deliveries"} == {
        k: v for k, v in before.items() if k != "deliveries"}
    assert world.queue().count == 0


def test_a_member_event_of_an_org_nobody_connected_is_ignored_by_the_worker(world: World) -> None:
    # Intake triage is pure (no store reads on the hot path): whether the org
    # is one the store holds is the worker's question.
    _connected(world)
    before = world.counts()
    payload = {"action": "member_added", "organization": {"id": 999, "login": "stranger"},
               "membership": {"user": {"id": 5, "login": "bob"}}}
    resp = world.post_github("organization", payload, delivery="stranger-1")
    assert (resp.status_code, resp.get_json()["status"]) == (202, "queued")
    world.drain()
    d = world.delivery("stranger-1")
    assert d is not None and d.status == "ignored" and "no workspace" in d.outcome["reason"]  # type: ignore[index]
    after = world.counts()
    assert {k: v for k, v in after.items() if k != "deliveries"} == {
        k: v for k, v in before.items() if k != "deliveries"}


# --------------------------------------------------------------------------- GitLab attacks

GITLAB_ATTACKS: list[tuple[str, dict[str, Any], int, str]] = [
    ("missing token", {"token": None}, 401, "invalid_token"),
    ("wrong token", {"token": "x" * len(GITLAB_SECRET)}, 401, "invalid_token"),
    ("token of the wrong length", {"token": GITLAB_SECRET[:-1]}, 401, "invalid_token"),
    ("token with a suffix", {"token": GITLAB_SECRET + "x"}, 401, "invalid_token"),
    ("wrong content type", {"headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
    ("invalid JSON, valid token", {"raw": b"{nope"}, 400, "invalid_payload"),
    ("missing event header", {"headers": {"X-Gitlab-Event": None}}, 400, "missing_header"),
    ("no idempotency headers", {"headers": {"Idempotency-Key": None, "X-Gitlab-Event-UUID": None}},
     400, "missing_header"),
]


@pytest.mark.parametrize(("case", "how", "status", "code"), GITLAB_ATTACKS,
                         ids=[a[0] for a in GITLAB_ATTACKS])
def test_gitlab_rejects(world: World, case: str, how: dict[str, Any], status: int, code: str) -> None:
    world.gitlab_workspace(100, "acme")
    before = world.counts()
    resp = world.post_gitlab("Member Hook", how.get("raw", GL_MEMBER), token=how.get("token", GITLAB_SECRET),
                             headers=how.get("headers"))
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["error"] == code
    assert world.counts() == before
    assert world.queue().count == 0


def test_gitlab_without_any_secret_accepts_nothing(make_world: MakeWorld) -> None:
    world = make_world(gitlab_webhook_secrets=())
    resp = world.post_gitlab("Member Hook", GL_MEMBER, token="anything")
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "invalid_token"
    assert world.counts()["deliveries"] == 0


STANDARD_ATTACKS: list[tuple[str, dict[str, Any]]] = [
    ("no signature headers", {"signing_secret": None}),
    ("stale timestamp", {"age": 301}),
    ("future timestamp", {"age": -301}),
    ("an hour old", {"age": 3600}),
    ("signed with another key", {"signing_secret": "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"}),
    ("bad signature", {"headers": {"webhook-signature": "v1,AAAA"}}),
    ("non-numeric timestamp", {"headers": {"webhook-timestamp": "soon"}}),
    ("signature of another body", {"other_body": True}),
    ("v2 signature only", {"version": "v2"}),
]


@pytest.mark.parametrize(("case", "how"), STANDARD_ATTACKS, ids=[a[0] for a in STANDARD_ATTACKS])
def test_gitlab_standard_webhooks_rejects(make_world: MakeWorld, case: str, how: dict[str, Any]) -> None:
    world = make_world(gitlab_webhook_signing_secret=GITLAB_SIGNING)
    world.gitlab_workspace(100, "acme")
    before = world.counts()
    headers = dict(how.get("headers", {}))
    body = json.dumps(GL_MEMBER).encode()
    if how.get("other_body") or how.get("version"):
        ts = int(time.time())
        sig = sign_standard(body + (b" " if how.get("other_body") else b""), GITLAB_SIGNING, "msg_1", ts)
        if how.get("version"):
            sig = sig.replace("v1,", "v2,")
        headers.update({"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": sig})
    resp = world.post_gitlab("Member Hook", body, signing_secret=how.get("signing_secret", GITLAB_SIGNING),
                             timestamp=int(time.time()) - how["age"] if "age" in how else None,
                             headers=headers)
    assert resp.status_code == 401, resp.get_json()
    assert resp.get_json()["error"] == "invalid_signature"
    assert world.counts() == before


def test_gitlab_standard_webhooks_accepts_a_valid_signature_among_several(make_world: MakeWorld) -> None:
    world = make_world(gitlab_webhook_signing_secret=GITLAB_SIGNING)
    world.gitlab_workspace(100, "acme")
    body = json.dumps(GL_MEMBER).encode()
    ts = int(time.time())
    good = sign_standard(body, GITLAB_SIGNING, "msg_2", ts)
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(ts),
               "webhook-signature": f"v1,AAAA v1a,zzz {good}"}
    resp = world.post_gitlab("Member Hook", body, headers=headers)
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["status"] == "queued"


def test_gitlab_signature_alone_when_only_the_signing_secret_is_set(make_world: MakeWorld) -> None:
    world = make_world(gitlab_webhook_secrets=(), gitlab_webhook_signing_secret=GITLAB_SIGNING)
    world.gitlab_workspace(100, "acme")
    resp = world.post_gitlab("Member Hook", GL_MEMBER, token=None, signing_secret=GITLAB_SIGNING)
    assert resp.status_code == 202, resp.get_json()


@pytest.mark.parametrize(("hook", "payload"), [
    ("Pipeline Hook", {"object_kind": "pipeline"}),
    ("Project Hook", {"event_name": "project_create", "project_id": 1}),
    ("System Hook", {"event_name": "user_failed_login", "user_id": 3}),
    ("Subgroup Hook", {"event_name": "subgroup_create", "group_id": 2, "parent_group_id": 100}),
    ("Member Hook", {"event_name": "user_add_to_group", "group_id": "not-a-number"}),
    ("System Hook", {"unexpected": ["shape"]}),
], ids=["pipeline", "project", "failed login", "subgroup", "bad group id", "no event name"])
def test_gitlab_payloads_we_do_not_handle_are_2xx_never_4xx(
    world: World, hook: str, payload: dict[str, Any]
) -> None:
    world.gitlab_workspace(100, "acme")
    resp = world.post_gitlab("" + hook, payload, idempotency_key="gl-ign")
    # GitLab disables hooks that keep failing: what we merely do not handle is 2xx.
    assert resp.status_code == 202
    body = resp.get_json()
    assert (body["delivery"], body["status"]) == ("gl-ign", "ignored") and body["reason"]
    assert world.delivery("gl-ign").status == "ignored"  # type: ignore[union-attr]
    assert world.queue().count == 0


def test_gitlab_member_event_of_a_group_nobody_connected_is_2xx_and_ignored_by_the_worker(
    world: World,
) -> None:
    world.gitlab_workspace(100, "acme")
    resp = world.post_gitlab("Member Hook", {**GL_MEMBER, "group_id": 555}, idempotency_key="gl-555")
    assert (resp.status_code, resp.get_json()["status"]) == (202, "queued")
    world.drain()
    d = world.delivery("gl-555")
    assert d is not None and d.status == "ignored" and "no workspace" in d.outcome["reason"]  # type: ignore[index]


def test_gitlab_idempotency_falls_back_to_event_uuid_and_body(world: World) -> None:
    world.gitlab_workspace(100, "acme")
    h = {"Idempotency-Key": None, "X-Gitlab-Event-UUID": "7b3a9c1e-uuid"}
    first = world.post_gitlab("Member Hook", GL_MEMBER, headers=h)
    again = world.post_gitlab("Member Hook", GL_MEMBER, headers=h)
    other = world.post_gitlab("Member Hook", {**GL_MEMBER, "user_id": 65}, headers=h)
    assert first.status_code == 202
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    assert other.status_code == 202  # same event UUID (one event, several hooks), another body
    assert first.get_json()["delivery"].startswith("7b3a9c1e-uuid.")
    with world.session() as s:
        assert deliveries.count_deliveries(s) == 2
    assert world.queue().count == 1  # one wake-up for the group's lane


# --------------------------------------------------------------------------- duplicates


def test_same_delivery_twice_is_queued_once(world: World) -> None:
    _connected(world)
    first = world.post_github("organization", MEMBER_ADDED, delivery="dup-1")
    second = world.post_github("organization", MEMBER_ADDED, delivery="dup-1")
    assert (first.status_code, first.get_json()["status"]) == (202, "queued")
    assert second.status_code == 200
    assert second.get_json() == {"delivery": "dup-1", "status": "duplicate"}
    assert world.queue().count == 1
    assert world.counts()["deliveries"] == 1


def test_gitlab_retry_with_the_same_idempotency_key_is_a_duplicate(world: World) -> None:
    world.gitlab_workspace(100, "acme")
    a = world.post_gitlab("Member Hook", GL_MEMBER, idempotency_key="idem-1")
    b = world.post_gitlab("Member Hook", GL_MEMBER, idempotency_key="idem-1")
    assert (a.status_code, b.status_code) == (202, 200)
    assert b.get_json()["status"] == "duplicate"
    assert world.queue().count == 1


@pytest.mark.parametrize("copies", [2, 6])
def test_identical_deliveries_at_the_same_instant_record_and_queue_one(world: World, copies: int) -> None:
    _connected(world)
    body = _body()
    headers = {
        "Content-Type": "application/json", "X-GitHub-Event": "organization",
        "X-GitHub-Delivery": "race-1", SIG: _good_sig(body),
    }
    barrier = threading.Barrier(copies)
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def post() -> None:
        client = world.app.test_client()
        barrier.wait()
        resp = client.post("/webhooks/github", data=body, headers=headers)
        with lock:
            answers.append((resp.status_code, resp.get_json()["status"]))

    threads = [threading.Thread(target=post) for _ in range(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [(200, "duplicate")] * (copies - 1) + [(202, "queued")]
    assert world.counts()["deliveries"] == 1
    assert world.queue().count == 1


# --------------------------------------------------------------------------- Redis down


def _accept_while_redis_down(world: World, ids: list[str]) -> None:
    for i, delivery in enumerate(ids):
        payload = {**MEMBER_ADDED, "membership": {"user": {"id": 600 + i, "login": f"u{i}"}}}
        resp = world.post_github("organization", payload, delivery=delivery)
        # Accepted: GitHub does not retry failed deliveries, so refusing would lose it.
        assert resp.status_code == 202, resp.get_json()
        # Recorded, but no wake-up could be queued: the answer says so.
        assert resp.get_json()["status"] == "received"
    with world.session() as s:
        rows = [deliveries.get_delivery(s, d) for d in ids]
        assert {r.status for r in rows} == {deliveries.RECEIVED}


def _sweep_and_drain(world: World, connection: redis_lib.Redis, ids: list[str]) -> None:
    world.redis = connection
    world.runtime._redis = connection
    # The sweep finds the lane's due rows in the database; sweeping twice (two
    # cron ticks) wakes it again, which is harmless: one drain takes the lane.
    assert sweep()["woken"] == 1
    assert sweep()["woken"] == 1
    world.drain()
    with world.session() as s:
        rows = [deliveries.get_delivery(s, d) for d in ids]
        assert {r.status for r in rows} == {deliveries.PROCESSED}
        assert {r.attempts for r in rows} == {1}  # each processed exactly once
        assert deliveries.lanes_with_due_work(s) == []
    assert sweep()["woken"] == 0


def _member_world(world: World, n: int) -> str:
    ws = _connected(world)
    for i in range(n):
        world.server.github.add_member(ORG_ID, 600 + i, f"u{i}", "member")
    return ws


def test_redis_down_deliveries_are_kept_and_swept_later(
    make_world: MakeWorld, down_fake_redis: redis_lib.Redis
) -> None:
    world = make_world(redis=down_fake_redis)
    ws = _member_world(world, 3)
    ids = ["down-1", "down-2", "down-3"]
    _accept_while_redis_down(world, ids)
    down_fake_redis.connection_pool.connection_kwargs["server"].connected = True
    _sweep_and_drain(world, down_fake_redis, ids)
    assert set(world.roster(ws)) == {600, 601, 602}


@pytest.mark.redis
def test_redis_down_with_real_redis(make_world: MakeWorld, real_redis: redis_lib.Redis) -> None:
    closed = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5)
    world = make_world(redis=closed)
    ws = _member_world(world, 2)
    ids = ["real-down-1", "real-down-2"]
    _accept_while_redis_down(world, ids)
    _sweep_and_drain(world, real_redis, ids)
    assert set(world.roster(ws)) == {600, 601}


def test_a_redelivery_of_an_unqueued_delivery_queues_it_once(
    make_world: MakeWorld, down_fake_redis: redis_lib.Redis
) -> None:
    world = make_world(redis=down_fake_redis)
    _member_world(world, 1)
    _accept_while_redis_down(world, ["heal-1"])
    down_fake_redis.connection_pool.connection_kwargs["server"].connected = True
    again = world.post_github("organization", {**MEMBER_ADDED, "membership": {"user": {"id": 600,
                              "login": "u0"}}}, delivery="heal-1")
    third = world.post_github("organization", MEMBER_ADDED, delivery="heal-1")
    assert again.get_json()["status"] == third.get_json()["status"] == "duplicate"
    # The redelivery rang the lane's bell once; the third found it pending.
    assert world.queue().count == 1
    world.drain()
    assert world.delivery("heal-1").status == deliveries.PROCESSED  # type: ignore[union-attr]


# --------------------------------------------------------------------------- signed GitLab replays


SIGNED_REPLAYS: list[tuple[str, dict[str, str]]] = [
    ("same headers", {}),
    ("fresh Idempotency-Key", {"Idempotency-Key": "attacker-chosen-1"}),
    ("fresh event UUID", {"X-Gitlab-Event-UUID": "attacker-chosen-2"}),
    ("fresh Idempotency-Key and event UUID", {"Idempotency-Key": "k3", "X-Gitlab-Event-UUID": "u3"}),
]


@pytest.mark.parametrize(("case", "changes"), SIGNED_REPLAYS, ids=[c[0] for c in SIGNED_REPLAYS])
def test_a_replayed_signed_gitlab_delivery_is_a_duplicate_by_its_webhook_id(
    make_world: MakeWorld, case: str, changes: dict[str, str]
) -> None:
    """Idempotency-Key and X-Gitlab-Event-UUID are not signed; webhook-id is.
    A captured delivery replayed inside the 5-minute window with new unsigned
    headers must not be recorded and processed again."""
    world = make_world(gitlab_webhook_signing_secret=GITLAB_SIGNING)
    world.gitlab_workspace(100, "acme")
    body = json.dumps(GL_MEMBER).encode()
    ts = int(time.time())
    captured = {"webhook-id": "msg_captured", "webhook-timestamp": str(ts),
                "webhook-signature": sign_standard(body, GITLAB_SIGNING, "msg_captured", ts),
                "Idempotency-Key": "original-key"}
    first = world.post_gitlab("Member Hook", body, headers=captured)
    assert (first.status_code, first.get_json()) == (202, {"delivery": "msg_captured", "status": "queued"})
    replay = world.post_gitlab("Member Hook", body, headers={**captured, **changes})
    assert replay.status_code == 200
    assert replay.get_json() == {"delivery": "msg_captured", "status": "duplicate"}
    assert world.counts()["deliveries"] == 1
    assert world.queue().count == 1


# --------------------------------------------------------------------------- exact body limits


def _post_chunked(world: World, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """Post ``body`` as a WSGI server does a chunked request: no
    Content-Length, and a server-terminated input stream."""
    environ = EnvironBuilder(path=path, method="POST", data=body, headers=headers).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    return world.client.open(Request(environ))


def _github_chunked(world: World, body: bytes) -> Any:
    return _post_chunked(world, "/webhooks/github", body, github_headers(body, GITHUB_SECRET, "organization"))


def _gitlab_chunked(world: World, body: bytes) -> Any:
    return _post_chunked(world, "/webhooks/gitlab", body,
                         gitlab_headers(body, event="Member Hook", token=GITLAB_SECRET))


# Valid JSON followed by junk that only fits past the limit: cutting the body
# at the limit would leave a valid, correctly parsed payload.
OVERSIZED_CHUNKED: list[tuple[str, Any, bytes]] = [
    ("github json then junk", _github_chunked, _body() + b" " * (MAX_BODY - len(_body())) + b"junk" * 1024),
    ("github one byte over", _github_chunked, _body() + b" " * (MAX_BODY - len(_body()) + 1)),
    ("gitlab json then junk", _gitlab_chunked,
     json.dumps(GL_MEMBER).encode() + b" " * MAX_BODY + b"x" * (1 << 20)),
]


@pytest.mark.parametrize(("case", "post", "body"), OVERSIZED_CHUNKED, ids=[c[0] for c in OVERSIZED_CHUNKED])
def test_a_chunked_body_over_the_limit_is_413_not_cut(world: World, case: str, post: Any, body: bytes) -> None:
    _connected(world)
    world.gitlab_workspace(100, "acme")
    before = world.counts()
    resp = post(world, body)
    assert resp.status_code == 413, resp.get_json()
    assert resp.get_json()["error"] == "payload_too_large"
    assert world.counts() == before
    assert world.queue().count == 0


@pytest.mark.parametrize("pad", [0, MAX_BODY - len(_body())], ids=["small", "exactly the limit"])
def test_a_chunked_body_within_the_limit_is_accepted(world: World, pad: int) -> None:
    _connected(world)
    resp = _github_chunked(world, _body() + b" " * pad)
    assert resp.status_code == 202, resp.get_json()
    assert world.counts()["deliveries"] == 1


# --------------------------------------------------------------------------- database down


UNREACHABLE_DATABASES = [
    "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2",
    "sqlite:////nonexistent-orgsync-dir/orgsync.db",
]


@pytest.mark.parametrize("url", UNREACHABLE_DATABASES, ids=["postgresql-refused", "sqlite-unopenable"])
@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_database_unreachable_is_503_with_retry_after(world: World, url: str, provider: str) -> None:
    down = Runtime(world.runtime.settings, redis_client=world.redis, engine=make_engine(url))
    client = create_app(runtime=down).test_client()
    if provider == "github":
        body = _body()
        resp = client.post("/webhooks/github", data=body,
                           headers=github_headers(body, GITHUB_SECRET, "organization"))
    else:
        body = json.dumps(GL_MEMBER).encode()
        resp = client.post("/webhooks/gitlab", data=body,
                           headers=gitlab_headers(body, event="Member Hook", token=GITLAB_SECRET))
    assert resp.status_code == 503, resp.get_json()
    assert resp.get_json()["error"] == "database_unavailable"
    assert int(resp.headers["Retry-After"]) > 0
    assert "127.0.0.1" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not*base64!"], ids=["empty key", "not base64"])
def test_a_malformed_signing_secret_authenticates_nothing(make_world: MakeWorld, secret: str) -> None:
    """load_settings refuses these at start; Settings built by hand must not
    turn them into a key anyone knows (HMAC under b"" or the raw text)."""
    world = make_world(gitlab_webhook_secrets=(), gitlab_webhook_signing_secret=secret)
    world.gitlab_workspace(100, "acme")
    body = json.dumps(GL_MEMBER).encode()
    ts = int(time.time())
    for key in (b"", secret.removeprefix("whsec_").encode()):
        mac = hmac.new(key, f"msg_forged.{ts}.".encode() + body, hashlib.sha256).digest()
        forged = {"webhook-id": "msg_forged", "webhook-timestamp": str(ts),
                  "webhook-signature": "v1," + base64.b64encode(mac).decode()}
        resp = world.post_gitlab("Member Hook", body, token=None, headers=forged)
        assert resp.status_code == 401, resp.get_json()
    assert world.counts()["deliveries"] == 0


@pytest.mark.postgres
def test_intake_survives_a_dropped_database_connection(pg_schema_url: str, fake_redis: redis_lib.Redis) -> None:
    """The intake's own PostgreSQL pool does not ping on checkout: a
    connection the server dropped (a restart, an idle timeout) fails its
    statement, and the delivery is recorded on a fresh connection instead of
    being answered with an error GitHub would not retry."""
    from dataclasses import replace

    from sqlalchemy import text

    from models.config import Settings
    from models.migrate import upgrade

    upgrade(pg_schema_url)
    settings = replace(Settings(database_url=pg_schema_url, redis_url="redis://127.0.0.1:6379/15"),
                       github_webhook_secrets=(GITHUB_SECRET,))
    rt = Runtime(settings, redis_client=fake_redis)
    client = create_app(runtime=rt).test_client()
    assert rt.intake_engine is not rt.engine  # the path under test

    def post(delivery: str) -> Any:
        body = _body()
        return client.post("/webhooks/github", data=body,
                           headers={**github_headers(body, GITHUB_SECRET, "organization"),
                                    "X-GitHub-Delivery": delivery})

    assert post("before").status_code == 202
    with rt.intake_engine.connect() as conn:  # the pooled connection the next request gets
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = make_engine(pg_schema_url)
    try:
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one() is True
        resp = post("after")
        assert resp.status_code == 202, resp.get_json()
        assert resp.get_json()["status"] == "queued"
        with admin.connect() as conn:
            rows = conn.execute(text("SELECT id, status FROM deliveries ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [("after", "received"), ("before", "received")]
        with rt.intake_engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        admin.dispose()
        rt.intake_engine.dispose()
        rt.engine.dispose()
