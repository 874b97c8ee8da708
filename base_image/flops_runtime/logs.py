"""Logging of the FL processes' own code, apart from the libraries'."""

from __future__ import annotations

import logging


def own_logger(name: str, tag: str) -> logging.Logger:
    """Logger `name` writing "<time> <tag> <level> <message>" to stderr, leaving the root logger alone: at
    INFO it would print every HTTP request that Flower's and MLflow's clients make."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"%(asctime)s {tag} %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
