"""Login sync (POST /v1/logins) against the fake provider server, through the
Flask app, on SQLite and PostgreSQL."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from demo.fakes.gitlab_server import DEFAULT_TOKEN
from demo.fakes.server import FakeProviderServer
from models import store
from models.base import Base
from models.config import Settings
from models.tables import Activity, RosterEntry, User, Workspace
from runtime.process import Runtime
from sync.context import SyncContext, build_sync_context
from sync.errors import InvalidUserToken
from sync.login import login_sync
from sync.orgs import full_sync
from webhooks.app import create_app

SERVICE = "svc-token-for-tests"
APP_ID = "4242"


def settings_for(server: FakeProviderServer, app_key: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "service_tokens": (SERVICE,),
        "github_api_url": server.github_api_url,
        "github_app_id": APP_ID,
        "github_app_private_key": app_key,
        "gitlab_url": server.gitlab_url,
        "gitlab_token": DEFAULT_TOKEN,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def ctx(session_factory: sessionmaker[Session], server: FakeProviderServer, app_key: str) -> SyncContext:
    return build_sync_context(settings_for(server, app_key), session_factory)


def make_app(engine: Engine, settings: Settings) -> Flask:
    app = create_app(runtime=Runtime(settings, engine=engine))
    assert "logins" in app.blueprints
    return app


@pytest.fixture
def client(engine: Engine, server: FakeProviderServer, app_key: str) -> FlaskClient:
    return make_app(engine, settings_for(server, app_key)).test_client()


def post(client: FlaskClient, body: Any, token: str | None = SERVICE) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/v1/logins", json=body, headers=headers)


class Provider:
    """Org membership on the fake server, for either provider."""

    def __init__(self, name: str, server: FakeProviderServer) -> None:
        self.name = name
        self.server = server

    def user(self, token: str, uid: int, login: str) -> None:
        if self.name == "github":
            self.server.github.add_user_token(token, uid, login)
        else:
            self.server.gitlab.add_user_token(token, uid, login)

    def org(self, org_id: int, login: str, installation_id: int | None = None) -> None:
        if self.name == "github":
            self.server.github.add_org(org_id, login, installation_id=installation_id)
        else:
            self.server.gitlab.add_group(org_id, login)

    def join(self, org_id: int, uid: int, login: str, role: str = "member") -> None:
        if self.name == "github":
            self.server.github.add_member(org_id, uid, login, role)  # type: ignore[arg-type]
        else:
            self.server.gitlab.add_member(org_id, uid, login, 40 if role == "admin" else 30)

    def leave(self, org_id: int, uid: int) -> None:
        if self.name == "github":
            self.server.github.remove_member(org_id, uid)
        else:
            self.server.gitlab.remove_member(org_id, uid)

    def go_down(self) -> None:
        if self.name == "github":
            self.server.github.fail("/user/memberships", 502, times=None)
        else:
            self.server.gitlab.fail_next(502, path_contains="/groups", times=None)

    def roster_requests(self) -> int:
        gh = self.server.github.count("/members") - self.server.github.count("/memberships")
        return gh + sum(1 for r in self.server.gitlab.requests if "/members" in r.path)


@pytest.fixture(params=["github", "gitlab"])
def prov(request: pytest.FixtureRequest, server: FakeProviderServer) -> Provider:
    return Provider(request.param, server)


def by_name(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {w["name"]: (w["kind"], w["role"]) for w in result["workspaces"]}


# --------------------------------------------------------------------------- behaviour


def test_first_login_creates_account_personal_and_provider_workspaces(
    prov: Provider, client: FlaskClient, ctx: SyncContext
) -> None:
    prov.user("tok-ann", 11, "ann")
    prov.org(100, "alpha")
    prov.org(200, "beta")
    prov.join(100, 11, "ann", "admin")
    prov.join(200, 11, "ann", "member")
    resp = post(client, {"provider": prov.name, "access_token": "tok-ann"})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["user"]["username"] == "ann"
    assert by_name(body) == {
        "ann": ("personal", "owner"),
        "alpha": ("provider", "owner"),
        "beta": ("provider", "owner"),
    }
    assert set(body["workspaces"][0]) == {"id", "name", "kind", "role"}
    with ctx.session() as s:
        ws = store.get_provider_workspace(s, prov.name, 200)
        assert ws is not None and ws.owner_id == body["user"]["id"]
        assert ws.billing_user_id == body["user"]["id"]
        entry = s.get(RosterEntry, (ws.id, 11))
        assert entry is not None and entry.role == "member"  # the roster keeps the org role
        if prov.name == "github":
            # Connected by login, without the app: status says so.
            assert ws.link_status == "no_installation"
        actors = set(s.scalars(select(Activity.actor)))
    assert actors == {f"login:{body['user']['id']}"}


def test_second_login_after_leaving_an_org_removes_access(
    prov: Provider, client: FlaskClient, ctx: SyncContext
) -> None:
    prov.user("tok-ann", 11, "ann")
    prov.org(100, "alpha")
    prov.org(200, "beta")
    prov.join(100, 11, "ann")
    prov.join(200, 11, "ann")
    first = post(client, {"provider": prov.name, "access_token": "tok-ann"}).get_json()
    assert "beta" in by_name(first)
    prov.leave(200, 11)
    second = post(client, {"provider": prov.name, "access_token": "tok-ann"}).get_json()
    assert by_name(second) == {"ann": ("personal", "owner"), "alpha": ("provider", "owner")}
    with ctx.session() as s:
        ws = store.get_provider_workspace(s, prov.name, 200)
        assert ws is not None
        assert s.get(RosterEntry, (ws.id, 11)) is None
        # They owned it and left the org; nobody else has an account: ownerless.
        assert ws.owner_id is None
        actions = list(s.scalars(select(Activity.action).where(Activity.workspace_id == ws.id)))
    assert "member.removed" in actions and "ownership.lost" in actions


def test_joining_an_org_that_already_has_a_workspace_adds_access_without_full_sync(
    prov: Provider, client: FlaskClient, ctx: SyncContext
) -> None:
    prov.user("tok-ann", 11, "ann")
    prov.user("tok-bob", 12, "bob")
    prov.org(100, "alpha")
    prov.join(100, 11, "ann", "admin")
    ann = post(client, {"provider": prov.name, "access_token": "tok-ann"}).get_json()
    prov.join(100, 12, "bob", "admin")
    bob = post(client, {"provider": prov.name, "access_token": "tok-bob"}).get_json()
    assert by_name(bob) == {"bob": ("personal", "owner"), "alpha": ("provider", "admin")}
    assert prov.roster_requests() == 0
    with ctx.session() as s:
        ws = store.get_provider_workspace(s, prov.name, 100)
        assert ws is not None and ws.owner_id == ann["user"]["id"]  # ann connected it
        runs = store.last_sync_run(s, ws)
    assert runs is None  # no full sync ran


def test_roster_member_who_signs_up_later_gets_access_at_once(
    server: FakeProviderServer, client: FlaskClient, ctx: SyncContext
) -> None:
    server.github.add_org(300, "gamma", installation_id=31)
    server.github.add_member(300, 55, "late", "member")
    server.github.add_member(300, 56, "other", "admin")
    with ctx.session() as s:
        ws_id = store.create_provider_workspace(
            s, "github", 300, "gamma", actor="test", installation_id=31
        ).id
    assert full_sync(ctx, ws_id, trigger="test").added == 2
    with ctx.session() as s:
        ws = store.get_workspace(s, ws_id)
        listed = {m["provider_user_id"]: m for m in store.members(s, ws)}
    assert listed[55]["user"] is None and listed[55]["access"] is False

    server.github.add_user_token("tok-late", 55, "late")
    server.github.reset_log()
    body = post(client, {"provider": "github", "access_token": "tok-late"}).get_json()
    assert by_name(body)["gamma"] == ("provider", "member")
    assert server.github.count("/members") == server.github.count("/memberships")  # no roster read
    with ctx.session() as s:
        ws = store.get_workspace(s, ws_id)
        listed = {m["provider_user_id"]: m for m in store.members(s, ws)}
    assert listed[55]["user"] == body["user"] and listed[55]["access"] is True


def test_pending_owner_becomes_owner_at_first_login(
    server: FakeProviderServer, client: FlaskClient, ctx: SyncContext
) -> None:
    server.github.add_org(400, "delta", installation_id=41)
    server.github.add_member(400, 70, "installer", "admin")
    with ctx.session() as s:
        store.create_provider_workspace(s, "github", 400, "delta", actor="test", installation_id=41,
                                        pending_owner_provider_user_id=70)
    server.github.add_user_token("tok-inst", 70, "installer")
    body = post(client, {"provider": "github", "access_token": "tok-inst"}).get_json()
    assert by_name(body)["delta"] == ("provider", "owner")


def test_token_is_never_logged_or_stored(
    prov: Provider, client: FlaskClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "gho_SuperSecretUserToken1234567890"
    prov.user(secret, 11, "ann")
    prov.org(100, "alpha")
    prov.join(100, 11, "ann")
    caplog.set_level(logging.DEBUG)
    resp = post(client, {"provider": prov.name, "access_token": secret})
    assert resp.status_code == 200
    bad = post(client, {"provider": prov.name, "access_token": secret + "x"})
    assert bad.status_code == 401
    assert secret not in caplog.text
    assert secret not in resp.get_data(as_text=True) and secret not in bad.get_data(as_text=True)
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                assert secret not in repr(tuple(row)), table.name


def snapshot(ctx: SyncContext) -> tuple[int, int, int, int]:
    with ctx.session() as s:
        return (
            len(s.scalars(select(User.id)).all()),
            len(s.scalars(select(Workspace.id)).all()),
            len(s.execute(select(RosterEntry.workspace_id)).all()),
            len(s.scalars(select(Activity.seq)).all()),
        )


def test_provider_down_answers_503_and_changes_nothing(
    prov: Provider, client: FlaskClient, ctx: SyncContext
) -> None:
    prov.user("tok-ann", 11, "ann")
    prov.org(100, "alpha")
    prov.join(100, 11, "ann")
    prov.user("tok-new", 12, "newbie")
    prov.join(100, 12, "newbie")
    assert post(client, {"provider": prov.name, "access_token": "tok-ann"}).status_code == 200
    before = snapshot(ctx)
    prov.leave(100, 11)  # would remove ann's access, if the listing could be read
    prov.go_down()
    for token in ("tok-ann", "tok-new"):  # an existing user and a first login
        resp = post(client, {"provider": prov.name, "access_token": token})
        assert resp.status_code == 503
        assert resp.get_json()["error"] == "provider_unavailable"
    assert snapshot(ctx) == before


def test_invalid_token_is_401(prov: Provider, client: FlaskClient, ctx: SyncContext) -> None:
    resp = post(client, {"provider": prov.name, "access_token": "nope"})
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "invalid_token"
    assert snapshot(ctx)[0] == 0
    with pytest.raises(InvalidUserToken):
        login_sync(ctx, prov.name, "nope")


# --------------------------------------------------------------------------- the endpoint


def test_service_token_required(client: FlaskClient) -> None:
    body = {"provider": "github", "access_token": "x"}
    assert post(client, body, token=None).status_code == 401
    wrong = post(client, body, token="wrong")
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "unauthorized"


def test_service_api_off_without_configured_token(
    engine: Engine, server: FakeProviderServer, app_key: str
) -> None:
    app = make_app(engine, settings_for(server, app_key, service_tokens=()))
    resp = post(app.test_client(), {"provider": "github", "access_token": "x"})
    assert resp.status_code == 403
    assert resp.get_json()["error"] == "service_api_disabled"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'"github"',
        b"{}",
        b'{"provider": "github"}',
        b'{"access_token": "abc"}',
        b'{"provider": "bitbucket", "access_token": "abc"}',
        b'{"provider": 1, "access_token": "abc"}',
        b'{"provider": "github", "access_token": 5}',
        b'{"provider": "github", "access_token": ""}',
        b'{"provider": "github", "access_token": "   "}',
        b'{"provider": "github", "access_token": "two words"}',
        b'{"provider": "github", "access_token": "tok\\nen"}',
        b'{"provider": "github", "access_token": "' + b"a" * 5000 + b'"}',
        b'{"provider": ["github"], "access_token": "abc"}',
    ],
)
def test_bad_bodies_are_400(client: FlaskClient, raw: bytes, ctx: SyncContext) -> None:
    resp = client.post(
        "/v1/logins", data=raw, content_type="application/json",
        headers={"Authorization": f"Bearer {SERVICE}"},
    )
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "invalid_request" and body["message"]
    assert snapshot(ctx) == (0, 0, 0, 0)


def test_org_hidden_from_the_token_but_confirmed_by_the_app_keeps_access(
    client: FlaskClient, ctx: SyncContext, server: FakeProviderServer
) -> None:
    """GitHub's OAuth app access restrictions can hide an org from a user's
    token; the app installation's view of the org decides."""
    gh = server.github
    gh.add_user_token("tok-ann", 11, "ann")
    gh.add_org(100, "alpha", installation_id=77)
    gh.add_member(100, 11, "ann")
    gh.add_member(100, 12, "bob", "admin")
    with ctx.session() as s:
        wid = store.create_provider_workspace(s, "github", 100, "alpha", actor="test",
                                              installation_id=77).id
    assert full_sync(ctx, wid, trigger="test").added == 2
    assert "alpha" in by_name(post(client, {"provider": "github", "access_token": "tok-ann"}).get_json())

    gh.hidden_from_user_tokens.add(100)  # the token stops listing the org; ann is still a member
    answer = post(client, {"provider": "github", "access_token": "tok-ann"}).get_json()
    assert "alpha" in by_name(answer)
    with ctx.session() as s:
        assert s.get(RosterEntry, (wid, 11)) is not None

    gh.remove_member(100, 11)  # now the app confirms she left: the login removes her
    answer = post(client, {"provider": "github", "access_token": "tok-ann"}).get_json()
    assert "alpha" not in by_name(answer)
    with ctx.session() as s:
        assert s.get(RosterEntry, (wid, 11)) is None
