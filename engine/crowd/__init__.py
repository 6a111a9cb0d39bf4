"""The simulated crowd: voters with a known taste who play the game, offline or
against a live server (docs/crowd.md).

See docs/architecture.md."""
