"""The RFC 3118 replay-detection counter (``options.replay``), on real files.

Values strictly increase across restarts (a new counter on the same file, as after a
crash) and clock steps in either direction; the ceiling on disk is above every value
issued, so nothing is ever reused; the file is replaced atomically; a corrupt file is a
ValueError that names it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from options.replay import FileCeilingStore, ReplayCounter, ntp_timestamp

# Unix seconds from 1970 to 2035 (before the NTP era wraps in February 2036).
CLOCK = st.floats(min_value=0, max_value=2_060_000_000, allow_nan=False)
BLOCKS = st.sampled_from((1, 1000, 1 << 32))


def budget(share: float) -> int:
    """A share of the profile's ``max_examples`` (100 unless HYPOTHESIS_PROFILE says otherwise)."""
    return max(5, int(settings().max_examples * share))


@settings(max_examples=budget(0.5), deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), CLOCK), min_size=1, max_size=25), block=BLOCKS)
def test_values_strictly_increase_across_restarts_and_clock_steps(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[bool, float]], block: int
) -> None:
    path = tmp_path_factory.mktemp("replay") / "counter"
    counter = ReplayCounter(FileCeilingStore(path), block)
    issued: list[int] = []
    for restart, now in steps:
        if restart:  # a crash and restart: only what is on disk survives
            counter = ReplayCounter(FileCeilingStore(path), block)
        value = counter.next(now)
        assert value >= ntp_timestamp(now)  # follows the clock when the clock allows
        assert not issued or value > issued[-1], (issued[-1], value)
        assert FileCeilingStore(path).load() > value  # reserved on disk before it was handed out
        issued.append(value)
    assert len(set(issued)) == len(issued)


def test_a_clock_that_steps_back_slows_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    counter = ReplayCounter(FileCeilingStore(tmp_path / "c"))
    first = counter.next(1_700_000_000.0)
    assert first == ntp_timestamp(1_700_000_000.0)
    assert counter.next(1_600_000_000.0) == first + 1
    assert counter.next(1_600_000_000.0) == first + 2
    assert counter.next(1_700_000_001.0) == ntp_timestamp(1_700_000_001.0)


def test_after_a_restart_the_counter_continues_above_the_ceiling(tmp_path: Path) -> None:
    path = tmp_path / "c"
    counter = ReplayCounter(FileCeilingStore(path), block=1000)
    values = [counter.next(1_700_000_000.0) for _ in range(10)]
    ceiling = FileCeilingStore(path).load()
    assert ceiling == values[0] + 1000  # one save for the whole block
    restarted = ReplayCounter(FileCeilingStore(path), block=1000)
    assert restarted.next(1_600_000_000.0) == ceiling + 1  # skips the rest of the block


def test_a_missing_file_starts_from_the_clock(tmp_path: Path) -> None:
    assert FileCeilingStore(tmp_path / "absent").load() == 0
    assert ReplayCounter(FileCeilingStore(tmp_path / "absent")).next(1.5) == ntp_timestamp(1.5)


def test_the_counter_refuses_to_wrap(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_text(f"{(1 << 64) - 1}\n")
    counter = ReplayCounter(FileCeilingStore(path))
    with pytest.raises(OverflowError):
        counter.next(0)


def test_block_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        ReplayCounter(FileCeilingStore(tmp_path / "c"), block=0)


# -- the file --------------------------------------------------------------------------


def test_save_writes_syncs_then_renames_then_syncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c"
    store = FileCeilingStore(path)
    store.save(41)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        # At the moment of the rename the new file is complete and the old one untouched.
        assert Path(src).read_bytes() == b"42\n"
        assert Path(src).parent == path.parent  # same filesystem, so the rename is atomic
        assert Path(dst).read_bytes() == b"41\n"
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.save(42)
    assert events == ["fsync file", "replace", "fsync dir"]
    assert path.read_bytes() == b"42\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary file left


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_save_leaves_the_old_value_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "c"
    store = FileCeilingStore(path)
    store.save(41)

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        store.save(42)
    monkeypatch.undo()
    assert store.load() == 41
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_a_failed_save_hands_out_no_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c"
    counter = ReplayCounter(FileCeilingStore(path), block=10)
    first = counter.next(100.0)

    def fail(*args: object) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="I/O error"):
        counter.next(200.0)  # beyond the ceiling: needs a save, which fails
    monkeypatch.undo()
    assert counter.last == first
    assert ReplayCounter(FileCeilingStore(path), block=10).next(0.0) > first


@pytest.mark.parametrize(
    "content",
    [b"", b"  \n", b"garbage\n", b"\xff\xfe\x00", b"12abc\n", b"-5\n", str(1 << 64).encode()],
    ids=["empty", "blank", "text", "binary", "trailing-junk", "negative", "too-large"],
)
def test_a_corrupt_file_is_a_value_error_naming_the_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "replay-counter"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="replay counter") as exc:
        FileCeilingStore(path).load()
    assert str(path) in str(exc.value)
    with pytest.raises(ValueError, match="replay counter"):
        ReplayCounter(FileCeilingStore(path))
