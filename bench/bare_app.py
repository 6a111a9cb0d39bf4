"""The floor for bench/web.py: Flask answering constants on the game's API paths.

Same routes, same status codes, roughly the same JSON sizes as webapp's API, and
no database, session or template: what gunicorn + Flask cost on their own.
"""

from flask import Flask, jsonify

PAIR = {"token": "x" * 120, "query": {"url": "/images/" + "0" * 64 + ".png"},
        "match": {"url": "/images/" + "1" * 64 + ".png"}}


def create_app() -> Flask:
    """Return the bare app."""
    app = Flask(__name__)

    @app.get("/api/pair")
    def pair():
        return jsonify(PAIR)

    @app.post("/api/vote")
    def vote():
        return jsonify({"id": 1, "votes_cast": 1}), 201

    @app.get("/")
    def index():
        return "ok"

    return app
