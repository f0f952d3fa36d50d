"""train_log.jsonl: appended and flushed per record, cut back to a checkpoint's step on resume."""

from __future__ import annotations

import pytest

from realfake.trainlog import TrainLog, keep_until, read_log


def test_each_record_is_on_disk_as_soon_as_it_is_written(tmp_path):
    path = tmp_path / "state" / "train_log.jsonl"
    with TrainLog(path) as log:
        log.write({"step": 1, "loss": 0.5})
        assert [r["step"] for r in read_log(path)] == [1]  # readable while the job runs
        log.write({"step": 2, "loss": 0.4})
    records = read_log(path)
    assert [(r["step"], r["loss"]) for r in records] == [(1, 0.5), (2, 0.4)]
    assert records[0]["time"] <= records[1]["time"]
    with TrainLog(path) as log:  # a second writer (the resumed job) appends
        log.write({"step": 3, "loss": 0.3})
    assert [r["step"] for r in read_log(path)] == [1, 2, 3]


def test_resume_keeps_the_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "train_log.jsonl"
    with TrainLog(path) as log:
        for step in range(1, 6):
            log.write({"step": step, "loss": 1.0 / step})
    with open(path, "a") as fh:
        fh.write('{"step": 6, "lo')  # the job was killed while writing
    assert [r["step"] for r in read_log(path)] == [1, 2, 3, 4, 5]
    keep_until(path, 3)
    assert [r["step"] for r in read_log(path)] == [1, 2, 3]
    with TrainLog(path) as log:
        log.write({"step": 4, "loss": 0.2})
    assert [r["step"] for r in read_log(path)] == [1, 2, 3, 4]  # no step twice
    keep_until(path, 0)  # a fresh start: an empty log
    assert read_log(path) == []
    keep_until(tmp_path / "absent.jsonl", 3)
    assert not (tmp_path / "absent.jsonl").exists()


def test_a_bad_line_inside_the_log_names_the_file_and_line(tmp_path):
    path = tmp_path / "train_log.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"train_log.jsonl:2: not a JSON record"):
        read_log(path)
