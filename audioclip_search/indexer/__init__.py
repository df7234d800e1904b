"""Indexing: files -> decode (reader) -> embed (encoder) -> store (writer), run by `IndexRunner`."""
