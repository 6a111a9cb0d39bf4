"""The files the engine and the web app exchange (docs/build-format.md): build
directories and vote exports, each with one reader and one writer. Torch-free.

See docs/architecture.md."""
