"""`python -m engine serve`: a build's variants answer photos over HTTP (engine.serve)."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import click

from engine.cli.options import usage_errors

SECRET_ENV = "DOPE_SERVICE_SECRET"


def check_bind(bind: str, secret: str | None) -> tuple[str, int]:
    """Return (host, port) of HOST:PORT; beyond loopback the shared secret is required."""
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise click.BadParameter(f"{bind!r} is not HOST:PORT", param_hint="--bind")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise click.BadParameter(f"{host!r} is not an IP address or localhost",
                                 param_hint="--bind") from None
    if not loopback and not secret:
        raise click.BadParameter(f"listening on {host} needs a shared secret: set {SECRET_ENV} "
                                 "(callers send it as X-Dope-Service-Secret)",
                                 param_hint="--bind")
    return host, int(port)


@click.command()
@click.option("--build", "build_dir", type=click.Path(exists=True, file_okay=False,
                                                      path_type=Path), required=True,
              help="A finished build (its indexes, features and checkpoints).")
@click.option("--bind", default="127.0.0.1:8100", show_default=True,
              help="HOST:PORT; loopback unless DOPE_SERVICE_SECRET is set.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="gunicorn worker processes (each answers one photo at a time).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@usage_errors
def serve(build_dir: Path, bind: str, workers: int, device: str) -> None:
    """Answer POST /v1/search (a photo) with every variant's nearest catalog items."""
    from engine.formats.builddir import open_build

    check_bind(bind, os.environ.get(SECRET_ENV))
    open_build(build_dir)  # a clear error now, not in a worker
    env = {**os.environ, "DOPE_SERVICE_BUILD": str(build_dir.resolve()),
           "DOPE_SERVICE_DEVICE": device}
    args = [sys.executable, "-m", "gunicorn", "-c", "python:engine.serve.gunicorn_conf",
            "--workers", str(workers), "--bind", bind, "engine.serve.app:from_env()"]
    click.echo(f"Serving {build_dir} on http://{bind} ({workers} worker(s))", err=True)
    os.execve(sys.executable, args, env)
