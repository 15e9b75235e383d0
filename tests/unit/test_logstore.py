"""Retained output (cube/runtime/logstore.py): records, cursors, bounded pages and the disk bounds."""
from __future__ import annotations

import os

import pytest

from cube.runtime import logstore
from cube.runtime.fake import FakeRuntime
from cube.runtime.base import ContainerSpec
from cube.runtime.logstore import BLOCK, LogStore, Record


def recs(*texts: str, start: int = 1_000, same: bool = False) -> list[Record]:
    return [Record(start if same else start + i, t.encode()) for i, t in enumerate(texts)]


def test_docker_frames_become_timestamped_records():
    frames = [b"2026-11-28T16:40:01.123456789Z out one\n", b"2026-11-28T16:40:01.5Z err two\n",
              b"2026-11-28T16:40:02.000000000Z a piece", b"2026-11-28T16:40:02.000000001Z of a line\n"]
    out = list(logstore.from_docker(frames))
    assert [r.text for r in out] == [b"out one\n", b"err two\n", b"a piece", b"of a line\n"]
    assert out[1].ts - out[0].ts == 376_543_211  # a short fraction is padded, not read as ns
    assert logstore.parse_timestamp(b"2026-11-28T16:40:01Z") == 1795884001 * 10**9
    assert logstore.parse_timestamp(b"garbage") is None


def test_a_frame_with_several_lines_and_carriage_returns():
    [a, b] = logstore.from_docker([b"2026-11-28T16:40:01Z one\r\ntwo\rthree\n"])
    assert a.text == b"one\r\n" and b.text == b"two\rthree\n" and a.ts == b.ts


def test_cursor_round_trip_and_bad_cursors():
    assert logstore.parse_cursor("") is None
    assert logstore.parse_cursor("123:4") == (123, 4)
    for bad in ("x", "1:", ":1", "-1:0", "1:2:3", "9" * 30 + ":0"):
        with pytest.raises(ValueError):
            logstore.parse_cursor(bad)


def test_pages_are_bounded_and_a_cursor_continues_exactly_where_the_last_page_ended():
    records = recs(*[f"line {i:03d}\n" for i in range(100)])
    seen, cursor, pages = b"", (0, 0), 0
    while True:
        text, after, more = logstore.page(logstore.after(records, cursor), cursor, budget=100)
        assert len(text) <= 100
        seen += text
        cursor = logstore.parse_cursor(after)
        pages += 1
        if not more:
            break
    assert seen == b"".join(r.text for r in records) and pages == 10  # 11 lines of 9 bytes a page


def test_records_stamped_alike_are_counted_not_repeated():
    records = recs("a\n", "b\n", "c\n", same=True)
    text, after, more = logstore.page(iter(records[:2]), (0, 0))
    assert (text, after, more) == (b"a\nb\n", "1000:2", False)
    text, after, _ = logstore.page(logstore.after(records, (1000, 2)), (1000, 2))
    assert (text, after) == (b"c\n", "1000:3")


def test_a_record_larger_than_a_page_is_cut_rather_than_stuck():
    text, _, more = logstore.page(iter([Record(1, b"x" * 50), Record(2, b"y\n")]), (0, 0), budget=10)
    assert text == b"x" * 10 and more


def test_read_tail_zero_gives_only_the_end_cursor_to_follow_from():
    records = recs("old 1\n", "old 2\n")

    def source(tail, since):
        return logstore.select(records, tail, since)
    assert logstore.read(source, 0, None) == (b"", "1001:1", False)
    assert logstore.read(source, 1, None)[0] == b"old 2\n"
    assert logstore.read(source, None, None)[0] == b"old 1\nold 2\n"
    records.append(Record(1002, b"new\n"))
    assert logstore.read(source, None, (1001, 1)) == (b"new\n", "1002:1", False)
    assert logstore.read(source, 0, None) == (b"", "1002:1", False)  # nothing yet: the start


def test_tail_bytes_keeps_the_newest_records_within_the_bound():
    records = recs(*[f"{i}\n" for i in range(1000)])
    kept = logstore.tail_bytes(records, 10 * (logstore.RECORD_OVERHEAD + 4))
    assert [r.text for r in kept] == [f"{i}\n".encode() for i in range(990, 1000)]
    [huge] = logstore.tail_bytes([Record(1, b"z" * 5000)], 100)
    assert huge.cost <= 100 and huge.text.endswith(b"z")


def test_file_format_round_trips_pieces_and_odd_bytes():
    records = [Record(5, b"plain\n"), Record(6, b"no newline"), Record(7, b"\xff\x00 bytes\r\n"), Record(8, b"\n")]
    assert logstore.decode(logstore.encode(records)) == records
    assert logstore.decode(b"torn line\n" + logstore.encode(records[:1]) + b"12 n half") == \
        [records[0], Record(12, b"half\n")]


def test_store_saves_the_tail_per_attempt_and_survives_a_restart(tmp_path):
    store = LogStore(str(tmp_path / "logs"), per_attempt=1000)
    records = recs(*[f"line {i}\n" for i in range(200)])
    size = store.save("task-1", 1, iter(records))
    assert size <= 1000 and store.has("task-1", 1) and not store.has("task-1", 2)
    kept = store.records("task-1", 1)
    assert kept == records[-len(kept):] and kept[-1].text == b"line 199\n"
    again = LogStore(str(tmp_path / "logs"), per_attempt=1000)  # a restarted worker
    assert again.records("task-1", 1) == kept and again.bytes_used() == store.bytes_used() == BLOCK
    assert again.records("task-1", 2) is None
    assert oct(os.stat(tmp_path / "logs").st_mode & 0o777) == "0o700"


def test_total_bound_drops_the_oldest_attempts_first(tmp_path):
    now = [100.0]
    store = LogStore(str(tmp_path), per_attempt=4000, total=3 * BLOCK, clock=lambda: now[0])
    for attempt in range(1, 6):
        now[0] += 1
        store.save("t", attempt, iter(recs("x" * 3000 + "\n")))
    assert [a for a in range(1, 6) if store.has("t", a)] == [3, 4, 5]  # ~3 KB each: a block
    assert store.bytes_used() <= 3 * BLOCK and sorted(os.listdir(tmp_path)) == ["t.3.log", "t.4.log", "t.5.log"]


def test_age_bound_and_leftover_temporary_files(tmp_path):
    now = [1000.0]
    (tmp_path / "t.9.log.tmp").write_bytes(b"half")  # a capture cut short by a crash
    store = LogStore(str(tmp_path), max_age=60, clock=lambda: now[0])
    assert not (tmp_path / "t.9.log.tmp").exists()
    store.save("t", 1, iter(recs("a\n")))
    now[0] += 30
    store.save("t", 2, iter(recs("b\n")))
    now[0] += 40
    assert store.prune() == 1 and not store.has("t", 1) and store.has("t", 2)


def test_disabled_store_keeps_nothing_and_odd_ids_get_safe_names(tmp_path):
    off = LogStore(str(tmp_path / "off"), per_attempt=0)
    assert off.save("t", 1, iter(recs("a\n"))) == 0 and not (tmp_path / "off").exists()
    store = LogStore(str(tmp_path / "on"))
    store.save("../../etc/passwd", 1, iter(recs("a\n")))
    [name] = os.listdir(tmp_path / "on")
    assert "/" not in name and ".." not in name and store.records("../../etc/passwd", 1)[0].text == b"a\n"


def test_fake_runtime_keeps_output_until_removed_and_calls_before_remove_in_between():
    rt = FakeRuntime()
    info = rt.run(ContainerSpec(task_id="t", attempt=1, name="t", image="img"))
    rt.write_log(info.container_id, "hello")
    rt.write_log(info.container_id, "world")
    assert [r.text for r in rt.output(info.container_id, tail=1)] == [b"world\n"]
    seen = []
    rt.stop(info.container_id, before_remove=lambda: seen.append(list(rt.output(info.container_id))))
    assert [r.text for r in seen[0]] == [b"hello\n", b"world\n"]
    with pytest.raises(Exception, match="no longer exists"):
        list(rt.output(info.container_id))


def disk_bytes(root) -> int:
    return sum(os.stat(os.path.join(root, n)).st_blocks * 512 for n in os.listdir(root))


def test_an_attempt_that_printed_nothing_writes_no_file_and_reads_as_empty(tmp_path):
    store = LogStore(str(tmp_path))
    assert store.save("t", 1, iter([])) == 0
    assert os.listdir(tmp_path) == [] and store.files() == 0 and store.bytes_used() == 0
    assert store.records("t", 1) == []  # remembered while the worker runs: empty, not "not kept"
    store.save("t", 2, iter(recs("a\n")))
    store.save("t", 2, iter([]))  # a later copy with nothing replaces the earlier one
    assert os.listdir(tmp_path) == [] and store.records("t", 2) == [] and store.bytes_used() == 0
    assert LogStore(str(tmp_path)).records("t", 1) is None  # a restarted worker does not know


def test_sizes_count_whole_blocks_so_many_small_files_stay_within_the_total(tmp_path):
    store = LogStore(str(tmp_path), total=64 << 10)  # 16 blocks
    for i in range(100):
        store.save(f"t{i}", 1, iter(recs(f"line {i}\n")))
    assert store.files() == 16 and store.bytes_used() == 16 * BLOCK
    assert [i for i in range(100) if store.has(f"t{i}", 1)] == list(range(84, 100))  # the newest
    assert disk_bytes(tmp_path) <= 64 << 10
    again = LogStore(str(tmp_path), total=64 << 10)  # a restart counts the files alike
    assert again.bytes_used() == store.bytes_used() and again.files() == 16


def test_file_count_bound_drops_the_oldest_and_restart_keeps_the_save_order(tmp_path):
    now = [100.0]
    store = LogStore(str(tmp_path), max_files=3, clock=lambda: now[0])
    for i in range(5):
        now[0] += 1
        store.save(f"t{i}", 1, iter(recs("x\n")))
        os.utime(tmp_path / f"t{i}.1.log", (now[0], now[0]))
    assert sorted(os.listdir(tmp_path)) == ["t2.1.log", "t3.1.log", "t4.1.log"]
    now[0] += 1
    store.save("t2", 1, iter(recs("again\n")))  # saved again: now the newest
    store.save("t5", 1, iter(recs("y\n")))
    assert sorted(os.listdir(tmp_path)) == ["t2.1.log", "t4.1.log", "t5.1.log"]
    for name, mtime in (("t4", 105), ("t2", 112), ("t5", 110)):
        os.utime(tmp_path / f"{name}.1.log", (mtime, mtime))
    again = LogStore(str(tmp_path), max_files=2, clock=lambda: now[0])  # by modification time after a restart
    again.prune()
    assert sorted(os.listdir(tmp_path)) == ["t2.1.log", "t5.1.log"]


def test_many_saves_do_not_sort_or_grow(tmp_path):
    store = LogStore(str(tmp_path), total=1 << 20, max_files=500)
    for i in range(3000):
        store.save(f"t{i}", 1, iter(recs("one line\n") if i % 2 else []))
    assert store.files() <= 500 and len(os.listdir(tmp_path)) == store.files()
    assert store.bytes_used() <= 1 << 20 and disk_bytes(tmp_path) <= 1 << 20
    assert len(store._empty) <= 500
