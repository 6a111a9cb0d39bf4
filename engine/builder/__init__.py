"""Making a build: the catalog, the variants' features, Annoy indexes, each query's
matches, offline evaluation, run as stages by `pipeline`.

See docs/architecture.md."""
