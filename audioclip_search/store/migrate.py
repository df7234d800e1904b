"""Bring a table written by an older version up to what this version writes, before writing to it.

Two things changed after the first release:

- ``id`` is the table's (unenforced) primary key. Without it, LanceDB's commit conflict check
  cannot see that two concurrent ``merge_insert`` calls both insert the same ids (an insert-only
  merge commits like an append, which conflicts with nothing), so two writers that started from
  the same version both add every row: the table holds each row twice, for good. With the key,
  the later commit is detected as a conflict and retried as an update.
- ``caption_source`` records where a caption came from (``sidecar`` / ``manifest``), so that
  editing or deleting a ``NAME.txt`` sidecar updates the stored caption.

Both are idempotent commits; a table that already has them is left untouched.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .schema import PRIMARY_KEY_META

ADDED_COLUMNS: dict[str, pa.DataType] = {"caption_source": pa.string()}


def has_primary_key(schema: pa.Schema) -> bool:
    """True when ``id`` is marked as the primary key (either form Lance writes)."""
    keys = (k.decode() if isinstance(k, bytes) else k for k in (schema.field("id").metadata or {}))
    return any(k.startswith(PRIMARY_KEY_META) for k in keys)


def upgrade_table(tbl: Any) -> list[str]:
    """Add what :data:`ADDED_COLUMNS` and the ``id`` primary key need; returns what was done."""
    done: list[str] = []
    missing = [pa.field(n, t) for n, t in ADDED_COLUMNS.items() if n not in tbl.schema.names]
    if missing:
        tbl.add_columns(pa.schema(missing))
        done.append("added " + ", ".join(f.name for f in missing))
    if not has_primary_key(tbl.schema):
        tbl.set_unenforced_primary_key("id")
        done.append("made id the primary key")
    return done
