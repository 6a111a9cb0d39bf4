"""`python -m engine ...`: the engine's command line."""

from engine.cli.main import main

main(prog_name="python -m engine")
