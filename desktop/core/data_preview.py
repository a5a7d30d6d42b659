"""One record of a data file, for the preflight panel's "show this record" (Qt-free, blocking).

The dataset check (`trainer check-data`, through `desktop.core.runtime`) names problems by line;
this reads the one line a person asked to see without loading the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_record"]


def read_record(path: str | Path, line: int, location: str = "line", limit: int = 20_000) -> str:
    """The text of record `line` (1-based) of a data file, pretty-printed when it is JSON.

    Blocking: the window calls it through `Operations.run_in_thread`.

    For `location == "line"` (JSON lines, CSV) it reads that physical line, streaming, so a
    1 GB file costs no memory; for other locations (records of a JSON array) it says where to
    look instead of loading the whole file.
    """
    p = Path(path).expanduser()
    if location != "line":
        return f"{location} {line} of {p.name}: open the file to see this {location}."
    opener: Any = open
    if p.name.endswith(".gz"):
        import gzip

        opener = gzip.open
    try:
        with opener(p, "rt", encoding="utf-8", errors="replace") as fh:
            for number, text in enumerate(fh, start=1):
                if number == line:
                    text = text.rstrip("\r\n")
                    try:
                        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
                    except ValueError:
                        pretty = str(text)
                    return pretty[:limit]
    except OSError as exc:
        return f"cannot read {p}: {exc.strerror or exc}"
    return f"{p.name} has fewer than {line} lines"
