"""Slurm: jobs on a lab cluster through Slurm's own commands, reached over SSH.

`ssh.SshSession` is the connection (asyncssh: host keys checked, reconnects with backoff,
offset reads and sha256-checked uploads), `batch` the batch script and Slurm's states, and
`provider.SlurmProvider` runs a job there; it is registered here as "slurm" and nothing outside
this package knows its internals.
"""

from desktop.providers.base import register_provider
from desktop.providers.slurm.provider import build_slurm_provider

register_provider("slurm", build_slurm_provider)
