"""`python -m engine ...`: the engine's command line."""

from engine.cli import main

main(prog_name="python -m engine")
