"""One line per meaningful event on stderr, in a form journald understands.

Format: `<P>message key=value key="value with spaces"` where <P> is the syslog priority
(journald strips it and files the line under that priority; SyslogLevelPrefix= is on by
default). The message is a fixed phrase ("peer joined", "bad frame dropped") so lines can
be grepped; the details are key=value pairs. Everything logged through the stdlib `logging`
module under the "formnet" logger (metrics, transport, ...) comes out the same way.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# logging level -> syslog priority
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    25: 5,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
NOTICE = 25
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": NOTICE,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

logging.addLevelName(NOTICE, "NOTICE")


def _value(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.hex()
    text = str(value)
    if text == "" or any(ch in text for ch in ' ="\n\t\\'):
        return json.dumps(text, ensure_ascii=False)
    return text


def format_fields(fields: dict[str, Any]) -> str:
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        message = record.getMessage().replace("\n", " ")
        fields = getattr(record, "fields", None)
        if fields:
            message = f"{message} {format_fields(fields)}"
        if record.exc_info:
            error = record.exc_info[1]
            message = f"{message} error={_value(f'{type(error).__name__}: {error}')}"
        return f"<{priority}>{message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (log_format = "json"), for log shippers that parse JSON."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": logging.getLevelName(record.levelno).lower(),
            "message": record.getMessage(),
        }
        for key, value in (getattr(record, "fields", None) or {}).items():
            line.setdefault(key, value.hex() if isinstance(value, bytes) else value)
        if record.exc_info:
            error = record.exc_info[1]
            line["error"] = f"{type(error).__name__}: {error}"
        return json.dumps(line, ensure_ascii=False, default=str)


class EventLog:
    """What the daemon parts call: `log.info("peer joined", id=..., addr=...)`."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("formnet.daemon")

    def _emit(self, level: int, message: str, fields: dict[str, Any]) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, message, extra={"fields": fields})

    def debug(self, message: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._emit(logging.INFO, message, fields)

    def notice(self, message: str, **fields: Any) -> None:
        self._emit(NOTICE, message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._emit(logging.WARNING, message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._emit(logging.ERROR, message, fields)


def setup_logging(level: str = "info", stream: Any = None, log_format: str = "text") -> None:
    """Route the "formnet" and "formd" logger trees to stderr, in the journald format or JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else JournalFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    for name in ("formnet", "formd"):
        root = logging.getLogger(name)
        root.handlers[:] = [handler]
        root.setLevel(LEVELS.get(level, logging.INFO))
        root.propagate = False
