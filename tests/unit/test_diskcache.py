"""realfake.diskcache: results fixed by their inputs, computed once per key across processes."""

from __future__ import annotations

import json

from realfake import diskcache


def test_a_cached_function_runs_once_per_key_and_a_local_config_is_part_of_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("REALFAKE_CACHE", str(tmp_path / "cache"))
    calls = []

    def count(model: str, size: int) -> dict[str, float]:
        calls.append((model, size))
        return {"flops": size * 1.5}

    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "config.json").write_text(json.dumps({"width": 8}))
    cached = diskcache.disk_cached("t")(count)
    assert cached(str(model), 4) == {"flops": 6.0}
    # a new process: a fresh in-memory cache over the same files
    assert diskcache.disk_cached("t")(count)(str(model), 4) == {"flops": 6.0}
    assert calls == [(str(model), 4)]
    diskcache.disk_cached("t")(count)(str(model), 8)  # another argument: another entry
    (model / "unet" / "config.json").write_text(json.dumps({"width": 16}))
    diskcache.disk_cached("t")(count)(str(model), 4)  # an edited config: another entry
    assert calls == [(str(model), 4), (str(model), 8), (str(model), 4)]
    assert len(list((tmp_path / "cache" / "t").glob("*.json"))) == 3


def test_an_unreadable_entry_is_recomputed_and_an_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("REALFAKE_CACHE", str(tmp_path / "cache"))
    diskcache.store("t", ["k"], 1.0)
    entry = diskcache.entry_path("t", ["k"])
    entry.write_text("{truncated")
    assert diskcache.load("t", ["k"]) is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("REALFAKE_CACHE", str(blocker))  # a file where the folder should be
    diskcache.store("t", ["k"], 2.0)  # no error
    assert diskcache.load("t", ["k"]) is None
