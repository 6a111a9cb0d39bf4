"""Jobs outside requests, each a CLI command first: the fit, importing a build,
exporting votes, recounting.

See docs/architecture.md."""
