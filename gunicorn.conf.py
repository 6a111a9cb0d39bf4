"""Gunicorn settings for Dope or Nope: gunicorn -c gunicorn.conf.py 'webapp:create_app()'."""

import multiprocessing
import os

bind = os.environ.get("DOPE_BIND", "127.0.0.1:8000")
# 2 x cores + 1, capped: SQLite serialises writes, so more workers only queue.
workers = int(os.environ.get("DOPE_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 9)))
worker_class = "sync"
# Each worker builds its own app and database engine; never share connections across fork.
preload_app = False
timeout = int(os.environ.get("DOPE_TIMEOUT", 30))
graceful_timeout = int(os.environ.get("DOPE_GRACEFUL_TIMEOUT", 20))
keepalive = 5
# The workers' heartbeat touches a file on every loop: on a disk that means a journal
# write per request; in memory it is free (gunicorn's FAQ, "blocking os.fchmod").
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    worker_tmp_dir = "/dev/shm"
# Access log off by default (it would record voters' requests); DOPE_ACCESS_LOG=- for stdout.
accesslog = os.environ.get("DOPE_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("DOPE_LOG_LEVEL", "info")
limit_request_line = 4094
limit_request_fields = 50
# Several servers (tests, benchmarks) may run side by side: no shared control socket.
control_socket_disable = not os.environ.get("DOPE_CONTROL_SOCKET")


def on_starting(server):
    """Log the app's dev-mode warnings once, here, rather than once per worker."""
    from webapp import config

    settings = {**config.DEFAULTS, **config.from_environ()}
    for message in config.dev_warnings(settings):
        server.log.warning(message)
    os.environ[config.WARNINGS_SAID] = "1"
