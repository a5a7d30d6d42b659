"""Where jobs run: one folder per provider, one protocol (`desktop.providers.base`). No Qt."""
