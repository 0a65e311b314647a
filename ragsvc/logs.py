"""Structured logs: one JSON object per line. Questions and document text appear only at debug level."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter("{asctime}{levelname}{name}{message}", style="{", rename_fields={"levelname": "level"})
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "huey"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def question_fields(log: logging.Logger, question: str) -> dict[str, str]:
    """The question itself only when debug logging is on: questions can hold personal data."""
    return {"question": question} if log.isEnabledFor(logging.DEBUG) else {}
