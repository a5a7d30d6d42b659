"""`finetune-desk repair`: the rebuilding lives in the core (`desktop.core.repair`), where the
window reaches it too; this module keeps the CLI's name for it."""

from __future__ import annotations

from desktop.core.repair import REBUILT_REASON, rebuild_store

__all__ = ["REBUILT_REASON", "rebuild_store"]
