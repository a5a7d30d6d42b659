"""Keep secret values out of every log line and every other text the app writes.

Two mechanisms, because either alone leaves a gap:

* a log-record factory (``logging.setLogRecordFactory``): every record created by any logger,
  from now on, has its message, args, exception text and string extras redacted the moment it
  is made, so handlers added later (by the app, a library, pytest) never see a secret;
* a :class:`SecretRedactingFilter` on every handler that exists at install time (on the root
  logger and every named logger), for records that bypass the factory
  (``logging.makeLogRecord``, records rebuilt from a socket or a queue).

Known secrets come from a process-wide registry (:func:`register_secret`; the
:class:`~desktop.core.secrets.SecretStore` registers every value it reads or writes) plus an
optional callable given to :func:`install_redaction`. :func:`redact` serves the other sinks: events,
crash reports, exported configs.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "SecretRedactingFilter",
    "install_redaction",
    "known_secret_count",
    "redact",
    "register_secret",
    "uninstall_redaction",
]

MASK = "***"
# A value this short would mask ordinary words everywhere; no real API key or token is.
MIN_SECRET_LENGTH = 4

_lock = threading.RLock()
_registry: set[str] = set()
_extra_sources: list[Callable[[], Iterable[str]]] = []
_pattern_cache: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)

# LogRecord attributes that are not user-supplied `extra=` values.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def register_secret(value: str | None) -> None:
    """Remember a secret value so that every later log line and :func:`redact` masks it.

    Values shorter than :data:`MIN_SECRET_LENGTH` characters are ignored (they would mask
    ordinary text). Surrounding whitespace is also registered stripped, since a pasted key often
    carries a newline.
    """
    if not value:
        return
    with _lock:
        for candidate in {value, value.strip()}:
            if len(candidate) >= MIN_SECRET_LENGTH:
                _registry.add(candidate)


def known_secret_count() -> int:
    """How many distinct secret values are registered (for diagnostics; never the values)."""
    return len(_current_secrets())


def _current_secrets() -> frozenset[str]:
    with _lock:
        values = set(_registry)
        sources = list(_extra_sources)
    for source in sources:
        try:
            values.update(v for v in source() if v and len(v) >= MIN_SECRET_LENGTH)
        except Exception:  # a broken source must not break logging; the registry still applies
            continue
    return frozenset(values)


def _pattern() -> re.Pattern[str] | None:
    global _pattern_cache
    secrets = _current_secrets()
    cached_for, pattern = _pattern_cache
    if secrets == cached_for:
        return pattern
    if secrets:
        # Longest first, so a secret that contains another is masked whole.
        alternatives = sorted(secrets, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(s) for s in alternatives))
    else:
        pattern = None
    _pattern_cache = (secrets, pattern)
    return pattern


def redact(text: str) -> str:
    """Return ``text`` with every known secret value replaced by ``***``."""
    pattern = _pattern()
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def _redact_record(record: logging.LogRecord) -> None:
    """Mask secrets in a record in place: message (with its args merged), exception, stack,
    and string ``extra=`` attributes. Idempotent."""
    pattern = _pattern()
    if pattern is None:
        return
    try:
        message = record.getMessage()
    except Exception:
        # A bad format string: keep the pieces, masked, rather than lose the record.
        message = f"{record.msg!s} {record.args!r}"
    record.msg = pattern.sub(MASK, message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = pattern.sub(MASK, record.exc_text)
        # The formatter re-renders exc_info only when exc_text is empty, so keeping both is safe;
        # dropping exc_info would lose the traceback for handlers that inspect it.
    if record.stack_info:
        record.stack_info = pattern.sub(MASK, record.stack_info)
    for key, value in list(vars(record).items()):
        if key not in _STANDARD_ATTRS and isinstance(value, str):
            setattr(record, key, pattern.sub(MASK, value))


class SecretRedactingFilter(logging.Filter):
    """A handler filter that masks every known secret value in the record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place and let it through."""
        _redact_record(record)
        return True


_FILTER = SecretRedactingFilter("ftdesk-secret-redaction")
_previous_factory: Callable[..., logging.LogRecord] | None = None
_installed_factory: Callable[..., logging.LogRecord] | None = None


def _all_handlers() -> list[logging.Handler]:
    handlers = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    return handlers


def install_redaction(known_secrets: Callable[[], Iterable[str]] | None = None) -> None:
    """Mask known secrets in every log record from now on, whatever handler writes it.

    Safe to call more than once: the record factory is wrapped once, the filter is added once per
    handler, and each call may add one more ``known_secrets`` source. Call it again after
    configuring logging if handlers were added in a way that bypasses the record factory.

    Args:
        known_secrets: an extra source of secret values, called on each record; it must be
            cheap and must not log.
    """
    global _previous_factory, _installed_factory
    with _lock:
        if known_secrets is not None and known_secrets not in _extra_sources:
            _extra_sources.append(known_secrets)
        current = logging.getLogRecordFactory()
        if current is not _installed_factory:
            previous = current

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _redact_record(record)
                return record

            _previous_factory = previous
            _installed_factory = factory
            logging.setLogRecordFactory(factory)
        for handler in _all_handlers():
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def uninstall_redaction() -> None:
    """Undo :func:`install_redaction` (tests): restore the record factory, remove the handler
    filters and extra sources. Registered secret values are kept."""
    global _previous_factory, _installed_factory
    with _lock:
        if _installed_factory is not None and logging.getLogRecordFactory() is _installed_factory:
            assert _previous_factory is not None
            logging.setLogRecordFactory(_previous_factory)
        _previous_factory = None
        _installed_factory = None
        _extra_sources.clear()
        for handler in _all_handlers():
            handler.removeFilter(_FILTER)
