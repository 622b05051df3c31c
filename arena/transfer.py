"""A whole arena as one archive file: `arena export` writes it, `arena import` loads it into an empty database.

The archive moves an arena between hosts and between SQLite and PostgreSQL with nothing lost or renumbered:
every table of `arena.models` (labs and key hashes, models, prompts, recorded answers, battles, messages, votes,
voter exclusions, endpoint checks, snapshots and their files, safety scores, milestones, the audit log), each
row with its own primary key, so a published snapshot's vote ids, battle ids and signature still hold after the
move. It is a plain tar:

    manifest.json              format, schema revision, source, and per table: file, columns, rows, SHA-256
    tables/<table>.jsonl.gz    one JSON object per row, in primary-key order

Values are JSON as they are, except: date-times as ISO 8601 in UTC (SQLite keeps no zone; everything is stored in
UTC), dates as ISO 8601, bytes as base64, and the non-finite floats as the strings "NaN", "Infinity", "-Infinity".
The archive names its schema revision (Alembic); it loads only into a database at that revision (an empty
database is migrated to it first), and `arena db upgrade` takes it on from there.

An import is one transaction: any failure (a corrupt file, a row the target refuses) leaves the target as it was.
It refuses a target that holds any row unless told to replace it; on PostgreSQL it moves every id sequence past
the imported ids, so new rows do not collide with them. Endpoint keys stay encrypted under the source's
ARENA_SECRET_KEY: the target needs the same secret to read them, as it needs the same signing key file to sign
further snapshots under the same public key.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import math
import os
import tarfile
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import orjson
from alembic.migration import MigrationContext
from sqlalchemy import Table, func, insert, inspect, select, text
from sqlalchemy import types as sqltypes
from sqlalchemy.engine import Connection, Engine

from arena import db
from arena import models as _models  # noqa: F401  (registers every table on Base.metadata)
from arena.db import Base

FORMAT = "arena-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BATCH_ROWS = 2000  # rows per INSERT ... VALUES batch: large enough to be fast, small enough to stay in memory
BATCH_BYTES = 32 << 20  # and fewer when the rows are large (a snapshot's files)


class TransferError(ValueError):
    """An archive or a target database that cannot be used, said in one line (the CLI exits with status 2)."""


class TableCount(NamedTuple):
    name: str
    rows: int


class TransferResult(NamedTuple):
    schema_revision: str
    tables: list[TableCount]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)


def tables() -> list[Table]:
    """Every table of the arena, parents before children (the order rows are inserted in)."""
    return list(Base.metadata.sorted_tables)


# ------------------------------------------------------------------------------------------------ values


def _utc_text(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def _float_text(value: float):
    return (
        value if math.isfinite(value) else ("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))
    )


def _float_value(value):
    return float(value) if isinstance(value, str) else value


def _codec(column) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(to JSON, from JSON) for one column's values; None passes through both untouched."""
    kind = column.type
    if isinstance(kind, sqltypes.DateTime):
        return _utc_text, lambda v: datetime.fromisoformat(v).astimezone(timezone.utc)
    if isinstance(kind, sqltypes.Date):
        return date.isoformat, date.fromisoformat
    if isinstance(kind, sqltypes.LargeBinary):
        return (lambda v: base64.b64encode(bytes(v)).decode("ascii")), base64.b64decode
    if isinstance(kind, sqltypes.Float):
        return _float_text, _float_value
    if isinstance(kind, sqltypes.Boolean):
        return bool, bool
    return (lambda v: v), (lambda v: v)


def _encoders(table: Table) -> list[tuple[str, Callable]]:
    return [(column.name, _codec(column)[0]) for column in table.columns]


def _decoders(table: Table) -> dict[str, Callable]:
    return {column.name: _codec(column)[1] for column in table.columns}


def schema_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


# ------------------------------------------------------------------------------------------------ export


def export_arena(engine: Engine, path: str | os.PathLike) -> TransferResult:
    """Write the whole arena to `path` (a tar), as one consistent read of the database; written whole or not at all.

    The rows are read in one transaction (REPEATABLE READ on PostgreSQL, one read transaction on SQLite), so an
    export taken while the service runs is a state the database was in, never half of a vote.
    """
    started = time.perf_counter()
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="arena-export-") as work, engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        elif engine.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN")  # one snapshot of the WAL for every table
        revision = schema_revision(connection)
        if revision is None:
            raise TransferError("the database has no arena schema; nothing to export")
        entries, counts = [], []
        for table in tables():
            file = Path(work) / f"{table.name}.jsonl.gz"
            rows, digest = _write_table(connection, table, file)
            entries.append(
                {
                    "name": table.name,
                    "file": f"tables/{table.name}.jsonl.gz",
                    "columns": [column.name for column in table.columns],
                    "rows": rows,
                    "sha256": digest,
                }
            )
            counts.append(TableCount(table.name, rows))
        connection.rollback()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "schema_revision": revision,
            "created_at": _utc_text(datetime.now(timezone.utc)),
            "source": {"dialect": engine.dialect.name},
            "code_version": _code_version(),
            "tables": entries,
        }
        _write_archive(path, manifest, Path(work))
    return TransferResult(revision, counts, time.perf_counter() - started)


def _write_table(connection: Connection, table: Table, file: Path) -> tuple[int, str]:
    encoders = _encoders(table)
    statement = select(table).order_by(*table.primary_key.columns)
    rows = 0
    with open(file, "wb") as raw:
        # level 6: the archive is written once and kept; it is a few times smaller than level 1's for the text
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
            # a snapshot's files can be tens of megabytes each: those rows come one at a time
            blobs = any(isinstance(column.type, sqltypes.LargeBinary) for column in table.columns)
            result = connection.execution_options(stream_results=True, yield_per=1 if blobs else 5000).execute(
                statement
            )
            for row in result:
                record = {
                    name: (None if value is None else encode(value)) for (name, encode), value in zip(encoders, row)
                }
                out.write(orjson.dumps(record) + b"\n")
                rows += 1
    return rows, _sha256(file)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_archive(path: Path, manifest: dict, work: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as archive:
            data = json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8")
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            archive.addfile(info, io.BytesIO(data))  # first, so an import reads it before any table
            for entry in manifest["tables"]:
                archive.add(work / Path(entry["file"]).name, arcname=entry["file"], recursive=False)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _code_version() -> str:
    try:
        from ranking.leaderboard import code_version  # loads JAX: only when an archive is written

        return code_version()
    except Exception:  # noqa: BLE001 - informative only
        return "unknown"


# ------------------------------------------------------------------------------------------------ import


def read_manifest(path: str | os.PathLike) -> dict:
    """The archive's manifest, checked for shape (not yet the tables' contents)."""
    try:
        with tarfile.open(path, mode="r:") as archive:
            member = archive.next()
            if member is None or member.name != MANIFEST:
                raise TransferError(f"{path}: not an arena export (its first file is not {MANIFEST})")
            manifest = json.loads(archive.extractfile(member).read())
    except tarfile.TarError as error:
        raise TransferError(f"{path}: not an arena export ({error})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TransferError(f"{path}: its manifest is not JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TransferError(
            f"{path}: not an arena export (format {manifest.get('format')!r})"
            if isinstance(manifest, dict)
            else f"{path}: not an arena export"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise TransferError(
            f"{path}: export format version {manifest.get('format_version')!r}; this arena reads "
            f"version {FORMAT_VERSION}"
        )
    if not isinstance(manifest.get("schema_revision"), str) or not isinstance(manifest.get("tables"), list):
        raise TransferError(f"{path}: the manifest lacks the schema revision or the table list")
    return manifest


def import_arena(engine: Engine, path: str | os.PathLike, *, replace: bool = False) -> TransferResult:
    """Load an archive written by export_arena into `engine`'s database, in one transaction.

    The database must be at the archive's schema revision, or have no arena schema at all (it is then migrated
    to that revision first, outside the transaction: an empty schema is all a failure leaves). It must hold no
    row unless `replace`, which deletes every row first, in the same transaction (the audit log's append-only
    triggers are lifted for that delete alone).
    """
    started = time.perf_counter()
    manifest = read_manifest(path)
    revision = manifest["schema_revision"]
    with engine.connect() as connection:
        current = schema_revision(connection)
        connection.rollback()
    if current is None:
        if inspect(engine).get_table_names():
            raise TransferError("the database has tables but no arena schema revision; import into an empty database")
        db.upgrade(engine.url.render_as_string(hide_password=False), revision)
    elif current != revision:
        raise TransferError(
            f"the archive is at schema revision {revision}, the database at {current}: import "
            f"into a database at {revision} (an empty one is migrated to it), then run "
            f"'arena db upgrade'"
        )
    known = {table.name: table for table in tables()}
    listed = [entry.get("name") for entry in manifest["tables"]]
    if set(listed) != set(known) or len(listed) != len(known):
        missing, extra = sorted(set(known) - set(listed)), sorted(set(listed) - set(known), key=str)
        raise TransferError(
            f"the archive's tables do not match this arena's at revision {revision}"
            f"{': missing ' + ', '.join(missing) if missing else ''}"
            f"{': unknown ' + ', '.join(map(str, extra)) if extra else ''}"
        )
    for entry in manifest["tables"]:
        columns = {column.name for column in known[entry["name"]].columns}
        if set(entry.get("columns") or ()) != columns:
            raise TransferError(
                f"table {entry['name']}: the archive's columns {entry.get('columns')} are not this "
                f"arena's {sorted(columns)}"
            )

    counts = []
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            # pysqlite starts a transaction only before DML; the trigger DDL of a replace must be inside it too.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            occupied = _occupied_tables(connection)
            if occupied and not replace:
                raise TransferError(
                    "the database is not empty ("
                    + ", ".join(f"{name}: {rows} rows" for name, rows in occupied[:4])
                    + (", ..." if len(occupied) > 4 else "")
                    + "); import into an empty database, or pass --replace to delete everything in it first"
                )
            if occupied:
                _delete_everything(connection)
            by_name = {entry["name"]: entry for entry in manifest["tables"]}
            with tarfile.open(path, mode="r:") as archive:
                members = {member.name: member for member in archive.getmembers()}
                for table in tables():
                    entry = by_name[table.name]
                    member = members.get(entry["file"])
                    if member is None or not member.isfile():
                        raise TransferError(f"{path}: {entry['file']} is missing from the archive")
                    rows = _load_table(connection, table, archive.extractfile(member), entry)
                    counts.append(TableCount(table.name, rows))
            if engine.dialect.name == "postgresql":
                _reset_sequences(connection)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
    return TransferResult(revision, counts, time.perf_counter() - started)


def _occupied_tables(connection: Connection) -> list[tuple[str, int]]:
    occupied = []
    for table in tables():
        rows = connection.execute(select(func.count()).select_from(table)).scalar_one()
        if rows:
            occupied.append((table.name, rows))
    return occupied


def _delete_everything(connection: Connection) -> None:
    """Delete every row, children first, lifting the tables' own triggers (the audit log's) for the delete alone."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        guarded = (
            connection.execute(
                text(
                    "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE NOT t.tgisinternal AND n.nspname = current_schema()"
                )
            )
            .scalars()
            .all()
        )
        guarded = [name for name in guarded if name in {table.name for table in tables()}]
        for name in guarded:
            connection.exec_driver_sql(f'ALTER TABLE "{name}" DISABLE TRIGGER USER')
        for table in reversed(tables()):
            connection.execute(table.delete())
        for name in guarded:
            connection.exec_driver_sql(f'ALTER TABLE "{name}" ENABLE TRIGGER USER')
        return
    triggers = []
    if dialect == "sqlite":
        triggers = connection.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND sql IS NOT NULL")
        ).all()
        for name, _sql in triggers:
            connection.exec_driver_sql(f'DROP TRIGGER "{name}"')
    for table in reversed(tables()):
        connection.execute(table.delete())
    for _name, sql in triggers:
        connection.exec_driver_sql(sql)


def _load_table(connection: Connection, table: Table, stream, entry: dict) -> int:
    """Insert one table's rows in batches, checking the file's SHA-256 and row count against the manifest."""
    decoders = _decoders(table)
    digest = hashlib.sha256()
    hashing = _HashingReader(stream, digest)
    statement = insert(table)
    rows, batch, pending = 0, [], 0
    try:
        with gzip.GzipFile(fileobj=hashing, mode="rb") as lines:
            for number, line in enumerate(lines, start=1):
                pending += len(line)
                try:
                    record = orjson.loads(line)
                    if not isinstance(record, dict) or set(record) != set(decoders):
                        raise ValueError("not a row of this table (its fields are not the table's columns)")
                    batch.append(
                        {name: (None if value is None else decoders[name](value)) for name, value in record.items()}
                    )
                except (ValueError, TypeError, orjson.JSONDecodeError) as error:
                    raise TransferError(f"{entry['file']} line {number}: {error}") from None
                if len(batch) >= BATCH_ROWS or pending >= BATCH_BYTES:
                    connection.execute(statement, batch)
                    rows, batch, pending = rows + len(batch), [], 0
        hashing.drain()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise TransferError(f"{entry['file']}: not a readable gzip file ({error})") from None
    if digest.hexdigest() != entry.get("sha256"):
        raise TransferError(f"{entry['file']}: its SHA-256 does not match the manifest (a damaged archive)")
    if batch:
        connection.execute(statement, batch)
        rows += len(batch)
    if rows != entry.get("rows"):
        raise TransferError(f"{entry['file']}: {rows} rows, the manifest says {entry.get('rows')}")
    return rows


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes every byte read through it (the gzip reader pulls the table file through)."""

    def __init__(self, stream, digest):
        self.stream, self.digest = stream, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        self.digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        for chunk in iter(lambda: self.stream.read(1 << 20), b""):
            self.digest.update(chunk)


def _reset_sequences(connection: Connection) -> None:
    """Move each PostgreSQL id sequence past the largest imported id (ids were inserted as they were)."""
    for table in tables():
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, sqltypes.Integer):
            continue
        column = keys[0].name
        sequence = connection.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": table.name, "column": column}
        ).scalar()
        if sequence is None:
            continue  # no sequence (snapshots' versions are chosen by the builder)
        connection.execute(
            text(
                f'SELECT setval(:sequence, COALESCE((SELECT MAX("{column}") FROM "{table.name}"), 1), '
                f'(SELECT MAX("{column}") FROM "{table.name}") IS NOT NULL)'
            ),
            {"sequence": sequence},
        )


def iter_rows(connection: Connection, table: Table) -> Iterator[dict]:
    """Every row of `table` as the archive writes it (for comparing two databases: the tests, an operator's check)."""
    encoders = _encoders(table)
    for row in connection.execute(select(table).order_by(*table.primary_key.columns)):
        yield {name: (None if value is None else encode(value)) for (name, encode), value in zip(encoders, row)}
