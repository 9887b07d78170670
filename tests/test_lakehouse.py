"""The lakehouse commit protocol on plain files, file identity, terminal-safe one-line errors with --json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from taxi_duration import cli, lakehouse
from taxi_duration.errors import terminal_safe
from taxi_duration.ingest.readers import expand_sources
from taxi_duration.registry.promotion import decide_promotion


def touch(root: Path, relative: str) -> str:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1")
    return relative


TRIP_A = "trips/service=yellow/year=2019/month=3/source=a-1/part-00000-x.c000.snappy.parquet"
QUARANTINE_A = "quarantine/source=a-1/part-00000-x.c000.snappy.parquet"


def test_a_lakehouse_from_before_commits_is_read_whole_and_committed_first(tmp_path: Path) -> None:
    touch(tmp_path, TRIP_A)
    touch(tmp_path, QUARANTINE_A)
    touch(tmp_path, "trips/.spark-staging-1/part-9.parquet")  # hidden: never data
    legacy = lakehouse.latest_snapshot(tmp_path)
    assert legacy is not None
    assert (legacy.version, legacy.files("trips"), legacy.files("quarantine")) == (0, [TRIP_A], [QUARANTINE_A])
    assert lakehouse.recover(tmp_path) == {"staging": 0, "uncommitted_files": 0}
    committed = lakehouse.latest_snapshot(tmp_path)
    assert committed is not None
    assert (committed.version, committed.files("trips"), committed.sources) == (1, [TRIP_A], {"a-1": {}})
    assert not (tmp_path / "trips" / ".spark-staging-1").exists()


def test_only_the_commit_makes_files_visible_and_recover_removes_the_rest(tmp_path: Path) -> None:
    lakehouse.recover(tmp_path)  # an empty lakehouse gets an empty first commit
    staging = lakehouse.new_staging(tmp_path)
    new_trip = TRIP_A.replace("part-00000-x", "part-00000-y")
    touch(staging, new_trip)
    moved = lakehouse.move_staged(tmp_path, staging, "trips")
    assert moved == [new_trip] and (tmp_path / new_trip).exists()
    snapshot = lakehouse.latest_snapshot(tmp_path)
    assert snapshot is not None and snapshot.files("trips") == []  # moved in, not committed: invisible
    # a killed ingest: the next one removes its staging and its moved-in files
    assert lakehouse.recover(tmp_path) == {"staging": 1, "uncommitted_files": 1}
    assert not (tmp_path / new_trip).exists() and not (tmp_path / "_staging").exists()


def test_publish_replaces_a_source_and_a_stale_writer_cannot_commit(tmp_path: Path) -> None:
    lakehouse.recover(tmp_path)
    for name in ("x", "y"):
        staging = lakehouse.new_staging(tmp_path)
        touch(staging, TRIP_A.replace("part-00000-x", f"part-00000-{name}"))
        version = lakehouse.publish(tmp_path, staging, {"a-1": {"path": "/a.csv"}}, {"run": name})
    snapshot = lakehouse.latest_snapshot(tmp_path)
    assert snapshot is not None and version == snapshot.version == 3
    assert snapshot.files("trips") == [TRIP_A.replace("part-00000-x", "part-00000-y")]
    assert snapshot.quality_report == {"run": "y"}
    assert not (tmp_path / TRIP_A).exists()  # the replaced file is gone, not just unlisted
    assert lakehouse.committed_quality_report(tmp_path) == {"run": "y"}
    with pytest.raises(lakehouse.ConcurrentIngestError, match="another ingest committed first"):
        lakehouse.commit(tmp_path, lakehouse.Snapshot(version=0), expected_version=2)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    with lakehouse.writer_lock(tmp_path):
        child = os.fork()
        if child == 0:  # another process trying to ingest the same lakehouse
            try:
                with lakehouse.writer_lock(tmp_path):
                    os._exit(0)
            except lakehouse.ConcurrentIngestError:
                os._exit(7)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 7


def test_a_file_is_one_source_however_it_is_named(tmp_path: Path, data_dir: Path) -> None:
    sample = tmp_path / "data" / "taxis.csv"
    sample.parent.mkdir()
    sample.write_bytes((data_dir / "taxis_sample_2019-03.csv").read_bytes())
    link = tmp_path / "link.csv"
    link.symlink_to(sample)
    dotted = str(tmp_path / "data" / ".." / "data" / "taxis.csv")
    sources = expand_sources([str(sample), str(link), dotted, str(tmp_path / "data")])
    assert [source.path for source in sources] == [str(sample.resolve())]
    assert expand_sources([str(link)])[0].source_id == expand_sources([dotted])[0].source_id
    assert sources[0].fingerprint()["size_bytes"] == sample.stat().st_size


@pytest.mark.parametrize(
    ("challenger", "champion", "tolerance", "promote"),
    [
        (0.30, None, 0.001, True),
        (0.29, 0.30, 0.001, True),
        (0.2999, 0.30, 0.001, False),  # better by 0.03%: within the tolerance
        (0.30 - 7e-15, 0.30, 0.001, False),  # an identical retrain (issue 16)
        (0.30 - 7e-15, 0.30, 0.0, True),
        (0.30, 0.30, 0.0, False),
    ],
)
def test_a_challenger_must_win_by_more_than_the_tolerance(
    challenger: float, champion: float | None, tolerance: float, promote: bool
) -> None:
    decision = decide_promotion("rmsle", challenger, champion, "1" if champion else None, tolerance)
    assert (decision.promote, decision.tolerance) == (promote, tolerance)


def test_terminal_safe_escapes_control_characters() -> None:
    assert terminal_safe("a\x1b]0;t\x07b\x00c\x9bd\ne\tf é") == "a\\x1b]0;t\\x07b\\x00c\\x9bd\\ne\tf é"


def test_a_crafted_header_reaches_the_terminal_escaped_and_json_gets_an_error_object(
    tmp_path: Path, spark: SparkSession, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = tmp_path / "evil.csv"
    evil.write_bytes(b"a\x1b[2J\x1b]0;owned\x07,b\x00\n1,2\n")
    argv = ["taxi-duration", "--workspace", str(tmp_path / "ws"), "ingest", str(evil), "--json"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert err == (
        f"error: {evil}: columns match no known trip format; found [a\\x1b[2J\\x1b]0;owned\\x07, b\\x00]; "
        "known formats: yellow, green, hvfhv, fhv, kaggle_train, kaggle_test\n"
    )
    last = json.loads(out.strip().splitlines()[-1])
    assert last == {
        "error": f"{evil}: columns match no known trip format; found [a\x1b[2J\x1b]0;owned\x07, b\x00]; "
        "known formats: yellow, green, hvfhv, fhv, kaggle_train, kaggle_test",
        "code": 2,
    }


def test_a_new_session_removes_the_empty_checkpoint_folders_of_earlier_ones(tmp_path: Path) -> None:
    """Each session's checkpoint directory is a new UUID folder under the workspace's; the next session removes the
    empty ones and keeps any with files (a learner's checkpoint not yet cleaned)."""
    from taxi_duration.spark import remove_empty_folders

    root = tmp_path / "tmp" / "spark-checkpoints"
    for name in ("0b1e-empty", "7c2d-empty"):
        (root / name).mkdir(parents=True)
    (root / "9f3a-used" / "rdd-12").mkdir(parents=True)
    (root / "9f3a-used" / "rdd-12" / "part-00000").write_bytes(b"x")
    (root / "a-file").write_bytes(b"y")
    assert remove_empty_folders(root) == 2
    assert sorted(p.name for p in root.iterdir()) == ["9f3a-used", "a-file"]
    assert (root / "9f3a-used" / "rdd-12" / "part-00000").read_bytes() == b"x"
    assert remove_empty_folders(tmp_path / "absent") == 0
