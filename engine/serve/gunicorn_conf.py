"""gunicorn settings for the query service (`-c python:engine.serve.gunicorn_conf`).

The app is loaded before the workers fork (`--preload`): the networks' weights are read
once and shared. A forked child must not use the thread pool its parent started (the
OpenMP runtime hangs), so each worker computes on its own DOPE_SERVICE_THREADS threads
(1 by default: one photo per worker at a time; add workers, not threads).
"""

import os

preload_app = True
timeout = 120


def post_fork(server, worker):
    import torch

    torch.set_num_threads(int(os.environ.get("DOPE_SERVICE_THREADS", "1")))
