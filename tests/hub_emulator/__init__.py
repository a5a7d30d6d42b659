"""A loopback Hugging Face Hub for the tests (see `server.HubEmulator`)."""

from tests.hub_emulator.server import HubEmulator, HubRequest

__all__ = ["HubEmulator", "HubRequest"]
