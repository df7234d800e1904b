"""The columnar plan diff (indexer/plan.py) against a plain-Python reference, across partitions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from audioclip_search.indexer.plan import diff_listing, path_buckets


def _reference(listing: dict[str, tuple[int, float]], stored: dict[str, tuple[int | None, float | None, str]]):
    kinds: dict[str, set[str]] = {"new": set(), "changed": set(), "unchanged": set(), "gone": set()}
    for p, (size, mtime) in listing.items():
        if p not in stored:
            kinds["new"].add(p)
        else:
            s_size, s_mtime, _ = stored[p]
            same = s_size == size and s_mtime is not None and abs(s_mtime - mtime) <= 1e-6
            kinds["unchanged" if same else "changed"].add(p)
    kinds["gone"] = set(stored) - set(listing)
    return kinds


@pytest.mark.parametrize("rows_per_partition", [1_000_000, 700])
def test_diff_matches_reference(tmp_path, rows_per_partition):
    rng = np.random.default_rng(0)
    n = 5000
    names = [f"/archive/{rng.integers(0, 50)}/f{i:06d}.wav" for i in range(n)]
    listing = {p: (int(rng.integers(1, 10_000)), float(rng.integers(0, 1_000_000)) / 7) for p in names[:4000]}
    stored: dict[str, tuple[int | None, float | None, str]] = {}
    for i, p in enumerate(names[500:]):
        if p in listing and i % 5:
            size, mtime = listing[p]
            mtime += 1e-9 if i % 7 == 0 else 0.0  # float noise within tolerance: unchanged
            stored[p] = (size, mtime, f"sha{i}")
        elif p in listing and i % 10 == 0:
            stored[p] = (None, None, f"sha{i}")  # a state with nulls: changed
        else:
            stored[p] = (int(rng.integers(1, 10_000)), 1.0, f"sha{i}")
    want = _reference(listing, stored)
    lpaths = list(listing)
    ltab = pa.table(
        {
            "path": lpaths,
            "size": pa.array([listing[p][0] for p in lpaths], pa.int64()),
            "mtime": [listing[p][1] for p in lpaths],
            "pos": pa.array(range(len(lpaths)), pa.int64()),
        }
    )
    # three "windows" per stored path, as an audio table holds
    spaths = [p for p in stored for _ in range(3)]
    stab = pa.table(
        {
            "path": spaths,
            "size": pa.array([stored[p][0] for p in spaths], pa.int64()),
            "mtime": pa.array([stored[p][1] for p in spaths], pa.float64()),
            "content_sha256": [stored[p][2] for p in spaths],
        }
    )
    result = diff_listing(ltab.to_batches(512), stab.to_batches(333), tmp_path, rows_per_partition=rows_per_partition)
    try:
        for kind, paths in want.items():
            got = result.column(kind, "path").to_pylist()
            assert len(got) == len(set(got)) and set(got) == paths, kind
            assert result.counts[kind] == len(paths)
        for batch in result.batches("changed"):
            for p, pos, sha in zip(
                *(batch.column(c).to_pylist() for c in ("path", "pos", "known_sha256")), strict=True
            ):
                assert lpaths[pos] == p and sha == stored[p][2]
        assert all(sha is None for sha in result.column("new", "known_sha256").to_pylist())
        assert result.partitions == (1 if rows_per_partition > n else 6)
    finally:
        result.cleanup()
    assert not result.folder.exists()


def test_buckets_are_stable_and_spread():
    paths = pa.array([f"s3://bucket/x/{i:08d}.png" for i in range(20_000)] + [""])
    b = path_buckets(paths, 8)
    assert np.array_equal(b, path_buckets(paths, 8)) and b.min() >= 0 and b.max() < 8
    counts = np.bincount(b[:-1], minlength=8)
    assert counts.min() > 0.9 * counts.mean()
    assert np.array_equal(path_buckets(paths.slice(5, 10), 8), b[5:15])  # offsets honoured
