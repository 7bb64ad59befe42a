"""CI tenant resolution (OIDC): a room of its own (issue 14). ``oidc.verifier``
checks a CI job's token (its keys in ``oidc.keys``, its claims in
``oidc.claims``) and ``oidc.tenant`` names its tenant; ``webhooks.oidc_api``
is the HTTP view over them. Imports models and sync (the store and the
provider types); nothing here knows Flask, RQ or the worker."""
