"""The baseline for the intake benchmark: a bare Flask endpoint that only answers 202."""
from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask("bare")


@app.post("/webhooks/github")
def accept() -> object:
    request.get_data()
    return jsonify({"status": "queued"}), 202


@app.get("/v1/<path:_rest>")
def read(_rest: str) -> object:
    # The baseline for GET benchmarks (bench/platform_bench.py).
    return jsonify({"status": "ok"}), 202
