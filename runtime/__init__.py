"""The composition: the one place that wires a process.

Settings become an engine, session factories and a Redis connection
(runtime.process.Runtime); runtime.queues is the one place that knows how work
reaches RQ; runtime.operations holds the operator actions the admin API and
the CLI share; runtime.logs configures logging. The web app (webhooks/), the
worker and the CLI (worker/) are entry points above this package; it imports
only the store (models/) and the domain (sync/), never them.
"""
