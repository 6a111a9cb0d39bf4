"""The engine's command line: `python -m engine build | extract | train | index | pairs |
evaluate | crowd | retrain`, thin click layers over the rooms below.

See docs/architecture.md."""
