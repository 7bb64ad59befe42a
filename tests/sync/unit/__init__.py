"""The fast unit tier: the sync layer's rules (full sync, member re-reads, the
planner, webhook event handling) against ``tests.fakes.provider.FakeProvider``
and an in-memory SQLite store; no HTTP, no adapters, a few seconds in all."""
