"""The Qt-free core: the job service and its checks, ingest, the store, secrets, the trainer
runtime gateway, config I/O, memory fit, redaction, paths, errors and background tasks.

Nothing here imports Qt (an import-linter contract checks it, indirect imports included); the
CLI and the window both sit on top of it.
"""
