"""The catalog: SQLite database of what the store holds.

One file, ``catalog.db``, in WAL mode so readers never block the writer and
several processes can share it. Every change that becomes visible to readers
(a blob committed, a tag moved, an object removed) is one transaction; the
pack bytes it references are made durable before the transaction commits, so
a crash at any point leaves either the old or the new state.

Tables (the schema is documented in ``docs/format.md``, "Catalog"):

``meta``      key/value: format version, store codec, chunking parameters.
``packs``     pack files known to the catalog (integer id <-> pack name).
``chunks``    chunk digest -> location in a pack, and the number of blobs
              whose recipe references it (``refs``). WITHOUT ROWID, keyed by
              the 32-byte digest: a lookup is one B-tree descent, O(log n),
              and opening the store reads nothing per chunk.
``blobs``     every blob by digest: size, media type, kind, recipe.
``to_compress``
              packs holding chunks that compact wrote uncompressed (the new
              file content of the compressed layers it deduplicated), which
              the next repack compresses.

This module is the only one that writes SQL; callers use its methods.
"""
from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

from . import recipe as recipe_codec
from .errors import StoreError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS packs (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS chunks (
    digest        BLOB PRIMARY KEY,
    pack          INTEGER NOT NULL REFERENCES packs(id),
    offset        INTEGER NOT NULL,
    stored_length INTEGER NOT NULL,
    length        INTEGER NOT NULL,
    codec         INTEGER NOT NULL,
    refs          INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack);
CREATE TABLE IF NOT EXISTS blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    media_type  TEXT,
    kind        TEXT NOT NULL,
    diff_id     TEXT,
    entries     INTEGER,
    recipe      BLOB NOT NULL,
    created     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_by_diff_id ON blobs(diff_id);
CREATE TABLE IF NOT EXISTS to_compress (
    pack  INTEGER PRIMARY KEY REFERENCES packs(id)
);
"""

#: Largest number of host parameters used in one statement.
_BATCH = 500


class _Held:
    """One thread's connection. Only that thread's local storage holds it
    (the catalog refers to it weakly), so the connection of a thread that
    ended is closed when its storage goes (a connection itself may live on
    in reference cycles until a garbage collection)."""

    __slots__ = ("con", "__weakref__")

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __del__(self):
        self.con.close()


class Catalog:
    """Connection to a store's ``catalog.db``.

    One connection per thread (SQLite connections are not shared across
    threads); :meth:`write` gives a transaction taken with ``BEGIN
    IMMEDIATE`` so writers serialise cleanly across processes.

    Raises:
        StoreError: the database is not a layerstore catalog or has a newer
            schema than this version understands.
    """

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        # every connection still open, in any thread; weakly, so that the
        # connection of a thread that ended goes with its local storage
        self._held: "weakref.WeakSet[_Held]" = weakref.WeakSet()
        self._closed = False
        self._pack_ids: Dict[str, int] = {}
        self._pack_names: Dict[int, str] = {}
        self._lock = threading.Lock()
        con = self._con()
        con.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            with self.write() as cur:
                cur.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif not str(row[0]).isdigit():
            raise StoreError(f"catalog {path}: schema_version {row[0]!r} is not a number")
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"catalog {path} has schema version {row[0]}, newer than supported ({SCHEMA_VERSION})")

    # -- connections ------------------------------------------------------
    def _con(self) -> sqlite3.Connection:
        held = getattr(self._local, "held", None)
        if held is None:
            if self._closed:
                raise StoreError(f"catalog {self.path} is closed (the store was closed)")
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=OFF")
            held = self._local.held = _Held(con)
            with self._lock:
                self._held.add(held)
        return held.con

    def close(self):
        """Close every connection this catalog opened, in whichever thread
        (worker threads open their own), so that SQLite checkpoints and
        removes the write-ahead log now rather than when they are collected.
        No other thread may be using the catalog."""
        with self._lock:
            held, self._held = list(self._held), weakref.WeakSet()
            self._local = threading.local()
            self._closed = True
        for h in held:
            h.con.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error)."""
        con = self._con()
        cur = con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        created = self._local.created = []  # pack rows this transaction inserted
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            # their ids are free again: another writer may take them
            with self._lock:
                for name in created:
                    pid = self._pack_ids.pop(name, None)
                    self._pack_names.pop(pid, None)
            raise
        else:
            cur.execute("COMMIT")
        finally:
            self._local.created = None

    @contextmanager
    def read(self) -> Iterator[sqlite3.Cursor]:
        """A read transaction: a consistent snapshot across statements."""
        con = self._con()
        cur = con.cursor()
        cur.execute("BEGIN")
        try:
            yield cur
        finally:
            cur.execute("COMMIT")

    # -- meta ---------------------------------------------------------------
    def get_meta(self, key: str) -> Optional[str]:
        row = self._con().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta_default(self, key: str, value: str) -> str:
        """Set ``key`` unless already set; return the stored value."""
        with self.write() as cur:
            cur.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            return cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    # -- packs --------------------------------------------------------------
    def pack_id(self, cur: sqlite3.Cursor, name: str) -> int:
        """Integer id of pack ``name``, creating the row inside ``cur``'s transaction."""
        pid = self._pack_ids.get(name)
        if pid is not None:
            return pid
        cur.execute("INSERT OR IGNORE INTO packs(name) VALUES (?)", (name,))
        inserted = cur.rowcount == 1
        pid = cur.execute("SELECT id FROM packs WHERE name = ?", (name,)).fetchone()[0]
        created = getattr(self._local, "created", None)
        if inserted:
            if created is None:
                return pid  # not known to outlive its transaction: not cached
            created.append(name)  # forgotten if the transaction rolls back
        with self._lock:
            self._pack_ids[name] = pid
            self._pack_names[pid] = name
        return pid

    def pack_name(self, pid: int) -> str:
        name = self._pack_names.get(pid)
        if name is None:
            row = self._con().execute("SELECT name FROM packs WHERE id = ?", (pid,)).fetchone()
            if row is None:
                raise StoreError(f"catalog references unknown pack id {pid}")
            name = row[0]
            with self._lock:
                self._pack_names[pid] = name
                self._pack_ids[name] = pid
        return name

    def mark_to_compress(self, cur: sqlite3.Cursor, names: Iterable[str]):
        """Inside ``cur``'s transaction: list packs ``names`` as holding
        chunks written uncompressed for a later repack to compress."""
        cur.executemany("INSERT OR IGNORE INTO to_compress(pack) VALUES (?)",
                        [(self.pack_id(cur, n),) for n in names])

    def packs_to_compress(self) -> set:
        """Names of the packs listed by :meth:`mark_to_compress`."""
        return {row[0] for row in self._con().execute(
            "SELECT p.name FROM to_compress t JOIN packs p ON p.id = t.pack")}

    def clear_to_compress(self, cur: sqlite3.Cursor, names: Iterable[str]):
        """Inside ``cur``'s transaction: take packs ``names`` off the list."""
        cur.executemany("DELETE FROM to_compress WHERE pack = (SELECT id FROM packs WHERE name = ?)",
                        [(n,) for n in names])

    # -- chunks -------------------------------------------------------------
    def existing_chunks(self, digests: Sequence[bytes]) -> set:
        """The subset of ``digests`` (32-byte) already in the catalog."""
        found = set()
        con = self._con()
        for i in range(0, len(digests), _BATCH):
            part = digests[i:i + _BATCH]
            q = "SELECT digest FROM chunks WHERE digest IN (%s)" % ",".join("?" * len(part))
            found.update(row[0] for row in con.execute(q, part))
        return found

    def chunk_locations(self, digests: Sequence[bytes]) -> Dict[bytes, tuple]:
        """digest -> (pack name, offset, stored_length, length, codec) for those present."""
        out = {}
        con = self._con()
        for i in range(0, len(digests), _BATCH):
            part = list(digests[i:i + _BATCH])
            q = ("SELECT digest, pack, offset, stored_length, length, codec FROM chunks "
                 "WHERE digest IN (%s)" % ",".join("?" * len(part)))
            for d, pack, off, slen, length, codec in con.execute(q, part):
                out[d] = (self.pack_name(pack), off, slen, length, codec)
        return out

    def add_chunks(self, cur: sqlite3.Cursor, rows: Iterable[tuple], referenced=()):
        """Insert (digest, pack name, offset, stored_length, length, codec)
        rows, with one reference for the digests in ``referenced`` and none
        for the others; a digest already present keeps its existing location
        and gains the reference. Rows go in digest order (B-tree inserts in
        key order touch each page once)."""
        ids = {}
        params = []
        for d, p, o, s, n, c in sorted(rows):
            pid = ids.get(p)
            if pid is None:
                pid = ids[p] = self.pack_id(cur, p)
            params.append((d, pid, o, s, n, c, 1 if d in referenced else 0))
        cur.executemany(
            "INSERT INTO chunks(digest, pack, offset, stored_length, length, codec, refs) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET refs = refs + excluded.refs",
            params,
        )

    def missing_chunks(self, cur: sqlite3.Cursor, digests: Sequence[bytes]) -> List[bytes]:
        """Digests of ``digests`` not in the catalog, inside ``cur``'s transaction."""
        have = set()
        for i in range(0, len(digests), _BATCH):
            part = list(digests[i:i + _BATCH])
            q = "SELECT digest FROM chunks WHERE digest IN (%s)" % ",".join("?" * len(part))
            have.update(row[0] for row in cur.execute(q, part))
        return [d for d in digests if d not in have]

    def add_refs(self, cur: sqlite3.Cursor, digests: Iterable[bytes], delta: int = 1):
        cur.executemany("UPDATE chunks SET refs = refs + ? WHERE digest = ?", [(delta, d) for d in digests])

    def referenced_length(self, pack_name: str) -> int:
        """Bytes at the start of pack ``pack_name`` that catalogued chunks
        occupy (end of the furthest entry: offset + 64-byte entry header +
        stored length), 0 when none."""
        row = self._con().execute(
            "SELECT max(c.offset + 64 + c.stored_length) FROM chunks c JOIN packs p ON p.id = c.pack "
            "WHERE p.name = ?", (pack_name,)
        ).fetchone()
        return int(row[0] or 0) if row else 0

    def chunk_count(self) -> int:
        return self._con().execute("SELECT count(*) FROM chunks").fetchone()[0]

    def iter_chunks(self) -> Iterator[tuple]:
        """Every (digest, pack name, offset, stored_length, length, codec, refs)."""
        for d, pack, off, slen, length, codec, refs in self._con().execute(
            "SELECT digest, pack, offset, stored_length, length, codec, refs FROM chunks"
        ):
            yield d, self.pack_name(pack), off, slen, length, codec, refs

    # -- blobs --------------------------------------------------------------
    def get_blob(self, digest: str) -> Optional[tuple]:
        """(digest, size, media_type, kind, diff_id, entries, recipe, created) or None."""
        return self._con().execute(
            "SELECT digest, size, media_type, kind, diff_id, entries, recipe, created FROM blobs WHERE digest = ?",
            (digest,),
        ).fetchone()

    def has_blob(self, digest: str) -> bool:
        return self._con().execute("SELECT 1 FROM blobs WHERE digest = ?", (digest,)).fetchone() is not None

    def add_blob(self, cur, digest, size, media_type, kind, diff_id, entries, recipe) -> bool:
        """Insert a blob row; False (and nothing changed) if it already exists."""
        cur.execute(
            "INSERT OR IGNORE INTO blobs(digest, size, media_type, kind, diff_id, entries, recipe, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (digest, size, media_type, kind, diff_id, entries, recipe, time.time()),
        )
        return cur.rowcount == 1

    def upgrade_raw_blob(self, cur, digest, media_type, kind, diff_id, entries, recipe) -> Optional[bytes]:
        """Turn a blob stored as raw chunks into a layer (or compressed
        layer) blob, or a layer held as its compressed bytes (an inflated
        recipe) into a deduplicated layer (``recipe`` a plain layer recipe):
        its row takes the new media type (None: the kind's default), kind,
        diff ID, entry count and recipe. Returns the old recipe, whose chunk
        references the caller drops; None (nothing changed) when the blob is
        absent or neither."""
        row = cur.execute("SELECT kind, recipe FROM blobs WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            return None
        inflated_to_plain = (row[0] == kind == "layer" and recipe_codec.version(row[1]) == recipe_codec.VERSION_INFLATED
                             and recipe_codec.version(recipe) == recipe_codec.VERSION)
        if row[0] != "raw" and not inflated_to_plain:
            return None
        cur.execute(
            "UPDATE blobs SET media_type = ?, kind = ?, diff_id = ?, entries = ?, recipe = ? "
            "WHERE digest = ?",
            (media_type, kind, diff_id, entries, recipe, digest),
        )
        return row[1]

    def iter_blobs(self) -> Iterator[tuple]:
        yield from self._con().execute(
            "SELECT digest, size, media_type, kind, diff_id, entries, recipe, created FROM blobs ORDER BY digest"
        )
