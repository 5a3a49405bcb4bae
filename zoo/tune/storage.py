"""Where a study lives: an SQLite file in the study folder by default (no server), any Optuna RDB URL
otherwise (PostgreSQL for many workers on many machines).

Both go through Optuna's RDBStorage with a heartbeat: every running trial's worker writes a heartbeat each
`heartbeat_interval` seconds; a trial whose heartbeat is older than `grace_period` belongs to a worker that
died (SIGKILL, power, network). Optuna marks it FAIL when any worker of the study starts its next trial
(`fail_stale_trials`, which `zoo tune` also calls when a worker starts), and RetryHeartbeatStaleTrialCallback
queues one copy of it (same parameters, WAITING) that the next free worker takes: a dead worker's trial is
re-run once, never left RUNNING. Two workers never run the same trial: a WAITING trial is moved to RUNNING
under a row lock (SELECT ... FOR UPDATE on PostgreSQL, the database lock on SQLite), and only the worker
that moved it runs it.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

from zoo.errors import UserError

# One retry of a trial whose worker died: a second death of the same configuration is the configuration's
# fault (out of memory, a crash it causes), not bad luck.
MAX_RETRY = 1


def require_optuna():
    """Import Optuna, or say how to install it (it is the optional extra `tune`)."""
    try:
        import optuna
    except ModuleNotFoundError:
        raise UserError("zoo tune needs Optuna: pip install 'offline-zoo[tune]'.") from None
    return optuna


def default_storage_url(folder: str | Path) -> str:
    return f"sqlite:///{Path(folder).resolve() / 'study.db'}"


def redact(url: str) -> str:
    """The URL without its password, for printing."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _with_driver(url: str) -> str:
    """A plain postgresql:// URL names no driver, and SQLAlchemy 2.1 picks psycopg 3 for it where 2.0 picked
    psycopg2: name the one that is installed (psycopg2-binary comes with the extra `tune`)."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, dialect in (("psycopg2", "postgresql+psycopg2://"), ("psycopg", "postgresql+psycopg://")):
        if importlib.util.find_spec(module) is not None:
            return dialect + url[len("postgresql://") :]
    return url


def _create(RDBStorage, url, engine_kwargs, heartbeat_interval, grace, retry_callback):
    """RDBStorage(...), retried when workers started together race to create Optuna's tables in a new
    database (PostgreSQL: "duplicate key value violates unique constraint pg_type_typname_nsp_index"):
    the loser finds the tables there on its next try. Other errors (unreachable server) raise at once."""
    from optuna.exceptions import ExperimentalWarning, StorageInternalError
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # Optuna's label on the heartbeat
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=retry_callback(max_retry=MAX_RETRY),
                )
        except Exception as error:  # Optuna may wrap SQLAlchemy's error in StorageInternalError
            cause = error.__cause__ if isinstance(error, StorageInternalError) else error
            if not isinstance(cause, (IntegrityError, ProgrammingError)) or attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(url: str, *, heartbeat_interval: int = 10, grace_period: int | None = None):
    """An RDBStorage with heartbeat and one retry of dead workers' trials; UserError (one line) when the URL
    is malformed, its driver is missing or its server cannot be reached."""
    optuna = require_optuna()

    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if heartbeat_interval < 1:
        raise UserError(f"--heartbeat must be at least 1 second, got {heartbeat_interval}.")
    grace = grace_period if grace_period is not None else 3 * heartbeat_interval
    if grace <= heartbeat_interval:
        raise UserError(
            f"The grace period ({grace} s) must exceed the heartbeat interval ({heartbeat_interval} s)."
        )
    if "://" not in url:
        raise UserError(
            f"--storage {url!r} is not a database URL: use e.g. sqlite:///study.db or "
            "postgresql://USER:PASSWORD@HOST:5432/DB (or leave it out for the study folder's SQLite file)."
        )
    shown, url = redact(url), _with_driver(url)
    engine_kwargs = {}
    if url.startswith("postgresql"):
        # Fail in seconds, not at the operating system's TCP timeout, when the server is down.
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return _create(
            RDBStorage, url, engine_kwargs, heartbeat_interval, grace, RetryHeartbeatStaleTrialCallback
        )
    except ImportError as error:  # Optuna re-raises the driver's ModuleNotFoundError as an ImportError
        missing = getattr(error.__cause__, "name", None) or getattr(error, "name", None) or "its driver"
        raise UserError(
            f"--storage {shown} needs the database driver '{missing}': pip install 'offline-zoo[tune]' "
            "(it brings psycopg2-binary for PostgreSQL)."
        ) from None
    except Exception as error:  # SQLAlchemy's OperationalError, ArgumentError, ... : the URL is the user's
        if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__ is not None:
            error = error.__cause__
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise UserError(
            f"Cannot open the study storage {shown}: {reason}. Check the URL and that the "
            "database server is running and reachable."
        ) from None
