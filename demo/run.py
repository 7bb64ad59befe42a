"""`orgsync dev --demo`: the same service, with a stand-in GitHub, GitLab and
CI token issuers on loopback in the same process.

The stand-ins are the fake providers the tests use (demo/fakes), seeded with
a few orgs, a group and users, the GitHub App installed. orgsync is
configured as if they were real (app id and key, webhook secrets, tokens);
nothing in the sync code knows it is a demo. Two controls under
``<stand-in>/demo`` play the part a person plays on GitHub: add a member to
an org (the stand-in then sends orgsync the signed webhook, as GitHub
would), and hand out a CI token (as a GitHub Actions job would get one).
"""
from __future__ import annotations

import dataclasses
import io
import json
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from werkzeug.wrappers import Request, Response

from demo.fakes.github_server import FakeGitHub
from demo.fakes.gitlab_server import DEFAULT_TOKEN, FakeGitLab
from demo.fakes.issuer import FakeIssuer
from demo.fakes.server import FakeProviderServer
from models import store
from models.config import Settings
from sync.context import build_sync_context
from sync.orgs import adopt_installation, full_sync
from sync.providers.signatures import github_headers

APP_ID = "1"
GITHUB_SECRET = "demo-github-secret"
GITLAB_SECRET = "demo-gitlab-secret"
SERVICE_TOKEN = "demo-service-token"
ADMIN_TOKEN = "demo-admin-token"

GITHUB_USERS = {1: "alice", 2: "bob", 3: "carol", 4: "dave"}
# (org id, login, installation id, members); the installer (pending owner) is the first admin.
GITHUB_ORGS: list[tuple[int, str, int, dict[int, str]]] = [
    (101, "acme", 9101, {1: "admin", 2: "member"}),
    (102, "globex", 9102, {3: "admin", 1: "member"}),
]
GITLAB_USERS = {11: "erin", 12: "frank"}
GITLAB_GROUPS: list[tuple[int, str, dict[int, int]]] = [(201, "initech", {11: 50, 12: 30})]


class IssuerAdapter(BaseAdapter):
    """A requests transport that answers the CI issuers' discovery and key
    URLs in-process (FakeIssuer registers them as it would with
    ``responses``), so the real verifier runs against the real issuer URLs
    without the network."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[tuple[str, str], Any] = {}

    def add_callback(self, method: str, url: str, callback: Any, **_kwargs: Any) -> None:
        self.routes[(method, url)] = callback

    def send(self, request: Any, *_args: Any, **_kwargs: Any) -> requests.Response:  # type: ignore[override]
        resp = requests.Response()
        resp.request, resp.url = request, request.url
        callback = self.routes.get((request.method, str(request.url).split("?", 1)[0]))
        if callback is None:
            resp.status_code, resp.raw = 404, io.BytesIO(b'{"message": "Not Found"}')
            return resp
        status, headers, body = callback(request)
        resp.status_code = status
        resp.headers = CaseInsensitiveDict(headers)
        # A body to stream, as from the network (the verifier reads it in chunks).
        resp.raw = io.BytesIO(body.encode() if isinstance(body, str) else body)
        return resp

    def close(self) -> None:
        return None


@dataclass
class Demo:
    server: FakeProviderServer
    settings: Settings
    issuers: dict[str, FakeIssuer]
    oidc_http: requests.Session
    orgsync_url: str = ""
    adopted: list[str] = field(default_factory=list)

    @property
    def stand_in_url(self) -> str:
        return self.server.base_url

    def stop(self) -> None:
        self.server.stop()


def start(base: Settings) -> Demo:
    """Start the stand-ins and return orgsync's settings pointed at them
    (the database and Redis settings are kept from ``base``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    github = FakeGitHub(app_id=int(APP_ID), app_public_key=public)
    gitlab = FakeGitLab()
    _seed(github, gitlab)
    controls = _Controls()
    server = FakeProviderServer(github=github, gitlab=gitlab, extra={"/demo": controls.wsgi})
    # The CI issuers of the stand-in instances: an issuer is bound to the
    # instance whose ids the store holds (GitHub Enterprise Server issues from
    # https://HOST/_services/token; a GitLab instance is its own issuer), so
    # they live on the stand-in's host. Their discovery and keys are answered
    # in-process by the adapter, over the real verifier's HTTP client.
    host = f"{server.host}:{server.port}"
    github_issuer, gitlab_issuer = f"https://{host}/_services/token", f"https://{host}"
    adapter = IssuerAdapter()
    http = requests.Session()
    for prefix in (github_issuer, gitlab_issuer):
        http.mount(prefix, adapter)
    issuers = {"github": FakeIssuer(adapter, github_issuer, "github", audience=base.oidc_audience),
               "gitlab": FakeIssuer(adapter, gitlab_issuer, "gitlab", audience=base.oidc_audience)}
    settings = dataclasses.replace(
        base,
        github_api_url=server.github_api_url,
        github_app_id=APP_ID,
        github_app_private_key=private,
        github_webhook_secrets=(GITHUB_SECRET,),
        gitlab_url=server.gitlab_url,
        gitlab_token=DEFAULT_TOKEN,
        gitlab_webhook_secrets=(GITLAB_SECRET,),
        gitlab_webhook_signing_secret=None,
        service_tokens=(SERVICE_TOKEN,),
        admin_tokens=(ADMIN_TOKEN,),
        oidc_github_issuers=(github_issuer,),
        oidc_gitlab_issuers=(gitlab_issuer,),
    )
    demo = Demo(server=server, settings=settings, issuers=issuers, oidc_http=http)
    controls.demo = demo
    server.start()
    return demo


def _seed(github: FakeGitHub, gitlab: FakeGitLab) -> None:
    for uid, login in GITHUB_USERS.items():
        github.add_user(uid, login)
        github.add_user_token(f"demo-token-{login}", uid, login)
    for org_id, login, installation, members in GITHUB_ORGS:
        github.add_org(org_id, login, installation_id=installation)
        for uid, role in members.items():
            github.add_member(org_id, uid, GITHUB_USERS[uid], role)  # type: ignore[arg-type]
    for uid, username in GITLAB_USERS.items():
        gitlab.add_user(uid, username)
        gitlab.add_user_token(f"demo-token-{username}", uid, username)
    for group_id, path, levels in GITLAB_GROUPS:
        gitlab.add_group(group_id, path)
        for uid, level in levels.items():
            gitlab.add_member(group_id, uid, GITLAB_USERS[uid], level)


def adopt_all(demo: Demo, session_factory: Any) -> list[str]:
    """Take on every seeded org and group and sync it fully, as if the app
    had just been installed (GitHub) and the group connected (GitLab)."""

    ctx = build_sync_context(demo.settings, session_factory)
    lines: list[str] = []
    for org_id, login, installation, members in GITHUB_ORGS:
        installer = next(uid for uid, role in members.items() if role == "admin")
        adopted = adopt_installation(ctx, installation, org_id, login, installer, trigger="demo:start")
        # Adoption only takes the installation on; its first full sync runs here.
        result = full_sync(ctx, adopted.workspace_id, trigger="demo:start")
        with ctx.session() as s:
            ws = store.get_provider_workspace(s, "github", org_id)
            if ws is not None and ws.subscription_plan is None:
                # CI tenant resolution needs a paying workspace.
                store.set_subscription(s, ws, "team", actor="demo:start")
        lines.append(f"github:{login} ({result.result}, {len(members)} members, plan team)")
    for group_id, path, levels in GITLAB_GROUPS:
        with ctx.session() as s:
            ws = store.get_provider_workspace(s, "gitlab", group_id)
            ws_id = ws.id if ws is not None else store.create_provider_workspace(
                s, "gitlab", group_id, path, actor="demo:start").id
        result = full_sync(ctx, ws_id, trigger="demo:start")
        lines.append(f"gitlab:{path} ({result.result}, {len(levels)} members)")
    demo.adopted = lines
    return lines


class _Controls:
    """``/demo/...`` on the stand-in server: what a person does on GitHub."""

    def __init__(self) -> None:
        self.demo: Demo | None = None

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._route(request)
        except (KeyError, ValueError) as exc:
            response = _json(404, {"error": "not_found", "message": str(exc)})
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        assert self.demo is not None
        path = request.path  # below the /demo mount point
        member = re.fullmatch(r"/github/(?P<org>[^/]+)/members/(?P<login>[^/]+)", path)
        if member and request.method == "POST":
            return self._add_member(member["org"], member["login"])
        if path == "/ci-token" and request.method == "GET":
            return self._ci_token(request.args.get("owner", "acme"))
        raise KeyError(f"no demo control at {request.method} /demo{path}")

    def _add_member(self, org_login: str, login: str) -> Response:
        demo = self.demo
        assert demo is not None
        uid = _github_user(login)
        org = next((o for o in GITHUB_ORGS if o[1] == org_login), None)
        if org is None:
            raise KeyError(f"no stand-in GitHub org {org_login!r}")
        org_id, _login, installation, _members = org
        demo.server.github.add_member(org_id, uid, login, "member")
        payload = {
            "action": "member_added",
            "membership": {"user": {"id": uid, "login": login}, "role": "member", "state": "active"},
            "organization": {"id": org_id, "login": org_login},
            "installation": {"id": installation},
            "sender": {"id": uid, "login": login},
        }
        status, answer = _post_webhook(demo, "organization", payload)
        return _json(200, {"github": f"{login} joined {org_login}",
                           "webhook": {"status_code": status, "response": answer}})

    def _ci_token(self, owner: str) -> Response:
        demo = self.demo
        assert demo is not None
        org = next((o for o in GITHUB_ORGS if o[1] == owner), None)
        if org is None:
            raise KeyError(f"no stand-in GitHub org {owner!r}")
        token = demo.issuers["github"].mint(
            repository=f"{owner}/app", repository_owner=owner, repository_owner_id=str(org[0]),
            sub=f"repo:{owner}/app:ref:refs/heads/main")
        return Response(token + "\n", content_type="text/plain")


def _github_user(login: str) -> int:
    for uid, name in GITHUB_USERS.items():
        if name == login:
            return uid
    raise KeyError(f"no stand-in GitHub user {login!r} (there are {', '.join(GITHUB_USERS.values())})")


def _post_webhook(demo: Demo, event: str, payload: dict[str, Any]) -> tuple[int, Any]:

    body = json.dumps(payload).encode()
    headers = github_headers(body, GITHUB_SECRET, event, str(uuid.uuid4()))
    request = urllib.request.Request(f"{demo.orgsync_url}/webhooks/github", data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def script(demo: Demo) -> str:
    """What to try, printed at start."""
    base, stand_in = demo.orgsync_url, demo.stand_in_url
    service = f"-H 'Authorization: Bearer {SERVICE_TOKEN}'"
    admin = f"-H 'Authorization: Bearer {ADMIN_TOKEN}'"
    json_h = "-H 'Content-Type: application/json'"
    return "\n".join([
        f"demo: stand-in GitHub and GitLab at {stand_in} (in this process; nothing leaves this machine)",
        f"  GitHub users {', '.join(GITHUB_USERS.values())}; GitLab users {', '.join(GITLAB_USERS.values())}",
        f"  adopted and synced: {'; '.join(demo.adopted)}",
        f"  service token {SERVICE_TOKEN}, admin token {ADMIN_TOKEN}, webhook secret {GITHUB_SECRET}",
        "",
        "Try, in another shell in this directory:",
        "  # the workspaces, one per org and group",
        "  orgsync workspaces list",
        "  # alice logs in with GitHub: her account, her personal workspace, and acme (she installed the app)",
        (f"  curl -s -X POST {base}/v1/logins {service} {json_h} "
        "-d '{\"provider\": \"github\", \"access_token\": \"demo-token-alice\"}'"),
        "  # dave joins acme on GitHub; GitHub sends orgsync the signed webhook; the roster follows",
        f"  curl -s -X POST {stand_in}/demo/github/acme/members/dave",
        "  orgsync workspaces members acme && orgsync workspaces activity acme",
        "  # a full resync of acme, then what it did",
        f"  curl -s -X POST {base}/v1/admin/resync {admin} {json_h} -d '{{\"target\": \"acme\"}}'",
        "  orgsync status",
        "  # a CI job of acme's resolves its tenant from its OIDC token",
        (f"  curl -s -X POST {base}/v1/oidc/resolve {json_h} "
        f"-d \"{{\\\"token\\\": \\\"$(curl -s {stand_in}/demo/ci-token?owner=acme)\\\"}}\""),
    ])
