"""The SQLite task registry: one row per task, shared by servers and the CLI.

WAL mode lets several servers and CLI readers use one file at once; every
write is a short transaction with a busy timeout. ``sqlite3.Error`` is
translated into :class:`RegistryError` here and nowhere else.

Several writers share a row (its server, the CLI's ``stop``, another server ending
it), so an update writes only the columns this process changed since it read or
wrote the record, and a change of lifecycle (``state``, ``kill_requested``) applies
only while the row is still ``running``: an exit, once recorded, is never turned
back into ``running`` by someone's older copy of the record.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from ..config import HOME_ENV
from ..errors import RegistryError, RegistryFullError, warn
from ..models import TaskRecord, TaskState
from .reserve import Reserve

BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for another process's write lock."""
READ_BUSY_TIMEOUT_MS = 1_000
"""How long a read may wait (in WAL mode reads never wait for writers; only for a crashed
writer's journal to be recovered)."""
WRITE_QUEUE_SECONDS = BUSY_TIMEOUT_MS / 1000
"""How long a write waits for the writes queued before it; past that it is given up (if not begun)."""
SCHEMA_VERSION = 7

_T = TypeVar("_T")

_COLUMNS = tuple(field.name for field in dataclasses.fields(TaskRecord))
_BOOLEAN_COLUMNS = frozenset({"kill_requested", "keep_running", "leftovers_ended"})
_LIFECYCLE_COLUMNS = frozenset({"state", "kill_requested"})
"""Changed only while a task runs: an update that changes one applies only to a running row."""
_COLUMN_TYPES = {
    "task_id": "TEXT PRIMARY KEY",
    "started_at": "REAL NOT NULL",
    "pid_create_time": "REAL",
    "ended_at": "REAL",
    "max_runtime_seconds": "REAL",
    "host_seen_at": "REAL",
    "host_output_bytes": "INTEGER",
    "host_dropped_bytes": "INTEGER NOT NULL DEFAULT 0",
    "pid": "INTEGER",
    "exit_code": "INTEGER",
    "max_restarts": "INTEGER NOT NULL DEFAULT 0",
    "max_log_bytes": "INTEGER NOT NULL DEFAULT 0",
    "kill_requested": "INTEGER NOT NULL DEFAULT 0",
    "keep_running": "INTEGER NOT NULL DEFAULT 0",
    "leftovers_ended": "INTEGER NOT NULL DEFAULT 0",
    "restart": "TEXT NOT NULL DEFAULT 'no'",
    "containment": "TEXT NOT NULL DEFAULT 'marker'",
    "max_memory_bytes": "INTEGER",
    "max_processes": "INTEGER",
}
"""Column types; every other column is TEXT."""

_Known = dict[int, tuple[weakref.ref[TaskRecord], tuple[object, ...]]]
"""By id() of a record object: the values the registry held for it when last read or written."""
_Changes = Sequence[tuple[TaskRecord, tuple[object, ...]]]


_TABLE_COLUMNS = ", ".join(f"{column} {_COLUMN_TYPES.get(column, 'TEXT')}" for column in _COLUMNS)
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS tasks ({_TABLE_COLUMNS})",
    "CREATE INDEX IF NOT EXISTS tasks_owner_started ON tasks (owner, started_at)",
)
_FORMERLY_ENDED = (
    f"state = '{TaskState.KILLED}' OR (state != '{TaskState.RUNNING}' AND "
    "(end_reason = 'exited' OR end_reason LIKE 'exited; %'))"
)
"""The tasks whose leftovers were ended, in a registry from before ``leftovers_ended`` (schema 6 and
older): those ended on request (killed), and those the next server had settled, which it said by
putting "exited" first in their end_reason."""


def _row_to_record(row: sqlite3.Row, path: Path) -> TaskRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    try:
        values["state"] = TaskState(values["state"])
    except ValueError as exc:
        raise RegistryError(
            f"the record of task {values['task_id']} in {path} cannot be read ({exc}); "
            "a newer mcp-backgroundr may have written it"
        ) from exc
    for column in _BOOLEAN_COLUMNS:
        values[column] = bool(values[column])
    return TaskRecord(**values)


def _record_values(record: TaskRecord) -> tuple[object, ...]:
    values = dataclasses.asdict(record)
    values["state"] = str(record.state)
    for column in _BOOLEAN_COLUMNS:
        values[column] = int(values[column])
    return tuple(values[column] for column in _COLUMNS)


LOW_SPACE_BYTES = 1024 * 1024
"""Free space under which an SQLite I/O error is taken for a full disk (SQLite says "disk I/O
error", not "full", when it cannot size its shared-memory file)."""
RETRY_FULL_SECONDS = 2.0
"""How often changes that could not be written on a full disk are tried again."""


def _lacks_space(exc: sqlite3.Error, path: Path) -> bool:
    """Whether ``exc`` came from a full disk (or quota) under ``path``."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return True
    if not name.startswith("SQLITE_IOERR"):
        return False
    try:
        info = os.statvfs(path.parent)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < LOW_SPACE_BYTES


@contextlib.contextmanager
def _translated(action: str, path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        if _lacks_space(exc, path):
            raise RegistryFullError(
                f"could not {action} the task registry at {path}: {exc} (its disk is full; free space there: "
                "remove_task deletes a finished task's log (list_tasks shows them), end_background_task stops a "
                "task that fills it, a smaller max_log_bytes caps a new task's log; from a shell, `mcp-backgroundr "
                "prune --keep 0` deletes the logs of finished tasks no running server holds, and a server "
                "starting caps logs that grew past their caps)"
            ) from exc
        hint = ""
        if "locked" in str(exc):
            hint = " (another process held its lock for longer than this process waits); try again"
        raise RegistryError(f"could not {action} the task registry at {path}: {exc}{hint}") from exc


def _identity_of(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to the registry at ``path``, created (0600) and brought up to date as needed.

    A registry already up to date is not written to: opening it works on a full disk.
    """
    with _translated("open", path):
        if not path.exists():
            # Create the file ourselves so it is 0600 from the start; SQLite gives
            # its -wal and -shm companions the same mode.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            _prepare(db, path)
        except BaseException:
            db.close()
            raise
    return db


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RegistryError(
            f"the task registry at {path} was written by a newer mcp-backgroundr (schema {version}, "
            f"this one knows {SCHEMA_VERSION}); upgrade, or point {HOME_ENV} elsewhere"
        )
    present = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
    if version < SCHEMA_VERSION or not present.issuperset(_COLUMNS):
        _upgrade(db)


def _connect_writer(path: Path) -> sqlite3.Connection | None:
    """:func:`_connect`; None when the registry exists but its disk is too full to open it for
    writing (its reads still work: the writer connects at the first write that finds space)."""
    try:
        return _connect(path)
    except RegistryFullError:
        if not path.exists():
            raise
        return None


def _connect_reader(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A connection for reads only, usable from any thread (callers hold a lock around it), and
    whether it is a last resort: on a full disk with no shared-memory file left beside the
    registry (its last user closed it cleanly, so every change is in the file itself), SQLite
    cannot make one, and the file is read as it stands (``immutable``)."""
    with _translated("open", path):
        try:
            return _open_reader(str(path), uri=False), False
        except sqlite3.Error as exc:
            if not _lacks_space(exc, path):
                raise
        return _open_reader(f"file:{urllib.parse.quote(str(path))}?immutable=1", uri=True), True


def _open_reader(target: str, uri: bool) -> sqlite3.Connection:
    db = sqlite3.connect(
        target, timeout=READ_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False, uri=uri
    )
    try:
        db.execute(f"PRAGMA busy_timeout = {READ_BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA user_version").fetchone()  # a first read: in WAL mode it maps the shared memory
    except BaseException:
        db.close()
        raise
    return db


def _report(error: RegistryError) -> None:
    warn(str(error))


def _roll_back(db: sqlite3.Connection) -> None:
    """Undo the transaction under way, if SQLite has not undone it already (it does, on a full disk or
    an I/O error): a ROLLBACK then would fail and replace the error that says what happened."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a registry written by an older version (or none) up to date, in one transaction: of two
    processes opening it at once, the second finds it done. New columns only ever get added."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            db.execute(statement)
        present = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
        for column in _COLUMNS:
            if column not in present:
                db.execute(f"ALTER TABLE tasks ADD COLUMN {column} {_COLUMN_TYPES.get(column, 'TEXT')}")
        if "leftovers_ended" not in present:
            db.execute(f"UPDATE tasks SET leftovers_ended = 1 WHERE {_FORMERLY_ENDED}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        _roll_back(db)
        raise
    db.execute("COMMIT")


def _written_back(rows: list[sqlite3.Row], path: Path) -> sqlite3.Connection:
    """A new registry at ``path`` (where the one a server held was deleted) holding ``rows``."""
    if not path.exists():
        # Its -wal and -shm companions, if still there, belong to the deleted file: a new
        # file beside them would take their pages for its own.
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    replacement = _connect(path)
    placeholders = ", ".join("?" for _ in _COLUMNS)
    with _translated("write back", path):
        replacement.execute("BEGIN IMMEDIATE")
        replacement.executemany(f"INSERT OR IGNORE INTO tasks ({', '.join(_COLUMNS)}) VALUES ({placeholders})", rows)
        replacement.execute("COMMIT")
    return replacement


class Registry:
    """Task records in an SQLite file (created 0600 inside a 0700 directory).

    Every write runs in the registry's own thread, which owns the connection that writes, one
    write after another: a write may wait up to BUSY_TIMEOUT_MS for another process's write
    lock, and no caller but the one who asks for it waits with it. :meth:`update_soon` does not
    wait at all (the server records changes that way). Reads use a second connection: in WAL
    mode a read never waits for a writer.

    A full disk locks no one out: the registry opens for reads all the same, and connects its
    writer at the first write that finds space. Changes given to :meth:`update_soon` that fail
    for lack of space are kept, and tried again every RETRY_FULL_SECONDS and at :meth:`close`.
    """

    def __init__(self, path: Path, reserve: bool = False) -> None:
        """``reserve``: keep room on the disk for the last writes (a server's registry; see reserve.py)."""
        self.path = path
        self._reserve = Reserve(path.parent) if reserve else None
        self._known: _Known = {}
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        self._pending: dict[int, tuple[TaskRecord, tuple[object, ...]]] = {}
        """Changes given to update_soon and not yet written, by id() of the record object."""
        self._pending_lock = threading.Lock()
        self._flush_queued = False
        self._retry: threading.Timer | None = None
        """Set while changes kept on a full disk wait to be tried again."""
        self.on_write_error: Callable[[RegistryError], None] = _report
        """Told when changes given to :meth:`update_soon` could not be written."""
        try:
            self._db = self._in_writer(_connect_writer, path)
            self._reader, self._reader_as_it_stands = _connect_reader(path)
        except BaseException:
            self._writer.shutdown(wait=False)
            raise
        self._read_lock = threading.Lock()
        self._identity = _identity_of(path)
        if self._reserve is not None:
            self._in_writer(self._reserve.keep)
        """The file this connection opened (device, inode): a registry deleted or replaced
        under a live server is noticed, and written back, by :meth:`restore`."""

    def _in_writer(self, function: Callable[..., _T], *args: object) -> _T:
        """Run ``function`` in the registry's thread and answer its result. A write queued behind
        others that are held up for WRITE_QUEUE_SECONDS is given up; one already begun is waited
        for (its own busy timeout bounds it)."""
        try:
            future = self._writer.submit(function, *args)
        except RuntimeError as exc:
            raise RegistryError(f"the task registry at {self.path} is closed") from exc
        try:
            return future.result(timeout=WRITE_QUEUE_SECONDS)
        except concurrent.futures.TimeoutError:
            if future.cancel():
                raise RegistryError(
                    f"could not write the task registry at {self.path}: the writes before this one have waited "
                    f"{WRITE_QUEUE_SECONDS:g} s for another process's write lock; try again"
                ) from None
            return future.result()

    def restore(self) -> int | None:
        """If the registry file is no longer the one this connection opened (someone deleted or
        replaced it), write every record this connection still reads back to its path.

        Returns how many records were written back, or None when the file is in place.
        """
        if _identity_of(self.path) == self._identity:
            return None
        return self._in_writer(self._restore)

    def _restore(self) -> int | None:
        if _identity_of(self.path) == self._identity:
            return None
        with _translated("read what remains of", self.path), self._read_lock:
            rows = (self._db or self._reader).execute(f"SELECT {', '.join(_COLUMNS)} FROM tasks").fetchall()
        replacement = _written_back(rows, self.path)
        if self._db is not None:
            self._db.close()
        self._db, self._identity = replacement, _identity_of(self.path)
        self._reopen_reader()
        return len(rows)

    def _reopen_reader(self) -> None:
        reader, as_it_stands = _connect_reader(self.path)
        with self._read_lock:
            self._reader.close()
            self._reader, self._reader_as_it_stands = reader, as_it_stands

    def _writable(self) -> sqlite3.Connection:
        """The connection that writes (in the registry's thread), connected now if the disk was
        full until now (raises RegistryFullError while it still is)."""
        if self._db is None:
            self._db = _connect(self.path)
            if self._reader_as_it_stands:  # it would not see what is written from now on
                self._reopen_reader()
        return self._db

    def flush(self) -> None:
        """Wait until every change given to :meth:`update_soon` so far was written (or failed)."""
        self._in_writer(lambda: None)

    def close(self) -> None:
        """Write what is pending (changes kept on a full disk: a last try, reported if it fails),
        then close."""
        if self._retry is not None:
            self._retry.cancel()
        with contextlib.suppress(RegistryError):
            self._in_writer(self._write_pending, True)
        with contextlib.suppress(RuntimeError):
            self._writer.submit(self._close_writer)
        self._writer.shutdown(wait=True)
        with self._read_lock:
            self._reader.close()

    def _close_writer(self) -> None:
        if self._db is not None:
            self._db.close()

    def insert(self, record: TaskRecord) -> None:
        self._in_writer(self._insert, record, _record_values(record))

    def _insert(self, record: TaskRecord, values: tuple[object, ...]) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with _translated("write", self.path):
            self._writable().execute(f"INSERT INTO tasks ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values)
        self._remember(record, values)

    def update(self, records: Sequence[TaskRecord]) -> None:
        """Write what changed in each record since it was read or written here, all in one
        transaction; a change of state or kill_requested only to a row still running."""
        self._in_writer(self._write_changes, [(record, _record_values(record)) for record in records])

    def update_soon(self, records: Sequence[TaskRecord]) -> None:
        """:meth:`update`, without waiting: the records' values as they are now are written by the
        registry's thread, after what was asked before. A failure goes to ``on_write_error``."""
        with self._pending_lock:
            for record in records:
                self._pending[id(record)] = (record, _record_values(record))
            if self._flush_queued:
                return
            self._flush_queued = True
        try:
            self._writer.submit(self._write_pending)
        except RuntimeError:
            self.on_write_error(RegistryError(f"the task registry at {self.path} is closed: a change was not written"))

    def _write_pending(self, last: bool = False) -> None:
        with self._pending_lock:
            changes, self._pending, self._flush_queued = list(self._pending.values()), {}, False
        kept_before, self._retry = self._retry is not None, None
        try:
            self._write_changes(changes)
        except RegistryFullError as exc:
            if last and self._reserve is not None and self._reserve.release():
                self._reserve = None  # the room it kept is for these changes
                _last_try(self._write_changes, changes, self.on_write_error)
                return
            if last:
                self.on_write_error(RegistryFullError(f"{exc}; {len(changes)} task change(s) are not recorded"))
                return
            self._keep(changes)
            if not kept_before:
                self.on_write_error(RegistryFullError(f"{exc}; the changes are kept and written once there is space"))
        except RegistryError as exc:
            self.on_write_error(exc)
        else:
            if kept_before and changes:
                warn(f"the disk has space again: wrote {len(changes)} task change(s) kept meanwhile")
            if kept_before and self._reserve is not None:
                self._reserve.keep()  # there may have been no room for it before

    def _keep(self, changes: Sequence[tuple[TaskRecord, tuple[object, ...]]]) -> None:
        """Changes that failed for lack of space go back to the pending ones (newer ones of the same
        record win), and are tried again in RETRY_FULL_SECONDS."""
        with self._pending_lock:
            for record, values in changes:
                self._pending.setdefault(id(record), (record, values))
        self._retry = threading.Timer(RETRY_FULL_SECONDS, self._queue_pending)
        self._retry.daemon = True
        self._retry.start()

    def _queue_pending(self) -> None:
        with self._pending_lock:
            if self._flush_queued:
                return
            self._flush_queued = True
        with contextlib.suppress(RuntimeError):  # closed meanwhile: close() made the last try
            self._writer.submit(self._write_pending)

    def _write_changes(self, changes: Sequence[tuple[TaskRecord, tuple[object, ...]]]) -> None:
        with _translated("write", self.path):
            db = self._writable()
            db.execute("BEGIN IMMEDIATE")
            try:
                for record, values in changes:
                    if changed := _changed(self._known, record, values):
                        _write(db, record.task_id, values, changed)
            except BaseException:
                _roll_back(db)
                raise
            db.execute("COMMIT")
        for record, values in changes:
            self._remember(record, values)

    def _remember(self, record: TaskRecord, values: tuple[object, ...]) -> None:
        """Keep what the registry holds for ``record`` (while the record object lives)."""
        key = id(record)

        def forget(_: weakref.ref[TaskRecord]) -> None:
            self._known.pop(key, None)

        self._known[key] = (weakref.ref(record, forget), values)

    def delete(self, task_id: str) -> None:
        self._in_writer(self._delete, task_id)

    def _delete(self, task_id: str) -> None:
        with _translated("write", self.path):
            self._writable().execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    def get(self, task_id: str) -> TaskRecord | None:
        with _translated("read", self.path), self._read_lock:
            row = self._reader.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        if row is None:
            return None
        record = _row_to_record(row, self.path)
        self._remember(record, tuple(row))
        return record

    def records(self, owner: str | None = None) -> list[TaskRecord]:
        """Records newest first, of one owner or of all; a record that cannot be read is left out."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM tasks"
        params: tuple[str, ...] = ()
        if owner is not None:
            query += " WHERE owner = ?"
            params = (owner,)
        with _translated("read", self.path), self._read_lock:
            rows = self._reader.execute(query + " ORDER BY started_at DESC, rowid DESC", params).fetchall()
        records = []
        for row in rows:
            with contextlib.suppress(RegistryError):
                records.append(record := _row_to_record(row, self.path))
                self._remember(record, tuple(row))
        return records


def _changed(known: _Known, record: TaskRecord, values: tuple[object, ...]) -> list[int]:
    """Indexes of the columns that differ from what this process last read or wrote (``known``)."""
    held = known.get(id(record))
    before = held[1] if held is not None and held[0]() is record else None
    return [i for i in range(1, len(_COLUMNS)) if before is None or values[i] != before[i]]


def _write(db: sqlite3.Connection, task_id: str, values: tuple[object, ...], changed: list[int]) -> None:
    assignments = ", ".join(f"{_COLUMNS[i]} = ?" for i in changed)
    condition = "task_id = ?"
    if any(_COLUMNS[i] in _LIFECYCLE_COLUMNS for i in changed):
        condition += f" AND state = '{TaskState.RUNNING}'"
    db.execute(f"UPDATE tasks SET {assignments} WHERE {condition}", [*(values[i] for i in changed), task_id])


def _last_try(write: Callable[[_Changes], None], changes: _Changes, report: Callable[[RegistryError], None]) -> None:
    """A server's last writes, once the reserve made room for them."""
    try:
        write(changes)
    except RegistryError as exc:
        report(RegistryError(f"{exc}; {len(changes)} task change(s) are not recorded"))
    else:
        warn(f"the disk is full: wrote {len(changes)} last task change(s) in the room kept for them")


def claim(registry: Registry, records: Sequence[TaskRecord], owner: str) -> list[TaskRecord]:
    """Make ``owner`` the owner of each of ``records`` whose row still names the owner it was
    read with, in one transaction; the records won, which say their new owner. Only one of
    several servers that found the same task of a dead one wins it: the others leave it."""

    def claimed() -> list[TaskRecord]:
        statement = "UPDATE tasks SET owner = ? WHERE task_id = ? AND owner = ?"
        with _translated("write", registry.path):
            db = registry._writable()
            db.execute("BEGIN IMMEDIATE")
            try:
                won = [r for r in records if db.execute(statement, (owner, r.task_id, r.owner)).rowcount == 1]
            except BaseException:
                _roll_back(db)
                raise
            db.execute("COMMIT")
        for record in won:
            record.owner = owner  # written again by the next update: the same value
        return won

    return registry._in_writer(claimed)
