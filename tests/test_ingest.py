"""Ingest on hand-built files: every row lands in trips or quarantine with the expected reason."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from taxi_duration.errors import UnknownFormatError, UnreadableInputError
from taxi_duration.ingest.job import IngestReport, ReconciliationError, _report, run_ingest
from taxi_duration.ingest.readers import expand_sources
from taxi_duration.params import QualityParams
from taxi_duration.spark import BYPASS_PARTIAL_AGGREGATION, keep_empty_branches, sql_conf, stable_file_splits

HEADER = (
    "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,"
    "PULocationID,DOLocationID,fare_amount,tip_amount,total_amount"
)
# (line, expected reason or None for a clean trip)
YELLOW_LINES = [
    ("1,2024-01-15 08:00:00,2024-01-15 08:20:00,1,3.5,161,236,18.0,3.0,25.0", None),
    ("1,2024-01-15 08:00:00,2024-01-15 08:20:00,1,3.5,161,236,18.0,3.0,25.0", "duplicate_row"),
    ("2,2024-01-15 09:00:00,2024-01-15 09:00:00,1,0.0,161,236,3.0,0,3.0", "duration_too_short"),
    ("2,2024-01-15 09:00:00,2024-01-15 08:50:00,1,1.0,161,236,7.0,0,7.0", "dropoff_before_pickup"),
    ("1,2024-01-15 10:00:00,2024-01-16 09:59:00,1,2.0,161,236,9.0,0,9.0", "duration_too_long"),
    ("1,2024-01-15 11:00:00,2024-01-15 11:10:00,1,1.2,264,236,8.0,0,8.0", "unknown_zone"),
    ("1,2024-01-15 12:00:00,2024-01-15 12:15:00,,2.0,161,237,11.0,2.0,15.0", None),
    ("1,2024-01-15 13:00:00,2024-01-15 13:10:00,1,0,161,237,8.0,0,8.0", "zero_distance"),
    ("1,not-a-time,2024-01-15 13:10:00,1,1.0,161,237,8.0,0,8.0", "unparseable_timestamp"),
    ("1,2024-01-15 14:00:00,2024-01-15 14:10:00,1,abc,161,237,8.0,0,8.0", "unparseable_number"),
    ("1,2024-01-15 15:00:00", "malformed_row"),
    ("1,2041-01-15 15:00:00,2041-01-15 15:20:00,1,2.0,161,237,9.0,0,9.0", "timestamp_out_of_range"),
    ("1,2024-01-15 16:00:00,2024-01-15 16:05:00,1,30.0,161,237,60.0,0,60.0", "implausible_speed"),
    ("1,2024-01-15 17:00:00,2024-01-15 17:30:00,12,5.0,161,237,20.0,0,20.0", "bad_passenger_count"),
    ("1,2024-01-15 18:00:00,2024-01-15 18:30:00,1.0,5.0,132,161,20.0,0,20.0", None),
]


def write_csv(path: Path, header: str, lines: list[str], trailing_newline: bool = False) -> str:
    path.write_text(header + "\n" + "\n".join(lines) + ("\n" if trailing_newline else ""), encoding="utf-8")
    return str(path)


def ingest(spark: SparkSession, root: Path, paths: list[str]) -> IngestReport:
    report = run_ingest(spark, paths, root / "trips", root / "quarantine", QualityParams())
    assert report.rows_in == report.rows_clean + report.rows_quarantined
    for file_report in report.files:
        assert file_report.rows_in == file_report.rows_clean + file_report.rows_quarantined
    return report


def trips(spark: SparkSession, root: Path) -> DataFrame:
    return spark.read.parquet(str(root / "trips"))


def test_yellow_csv_rows_are_clean_or_quarantined_with_their_reason(spark: SparkSession, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "yellow.csv", HEADER, [line for line, _ in YELLOW_LINES])
    report = ingest(spark, tmp_path, [path])

    expected_reasons: dict[str, int] = {}
    for _, reason in YELLOW_LINES:
        if reason:
            expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert (report.rows_in, report.rows_clean, report.rows_quarantined) == (15, 3, 12)
    assert report.by_reason == expected_reasons

    expected_trips = spark.createDataFrame(
        [
            (datetime(2024, 1, 15, 8, 0), 1, 161, 236, 3.5, 1200.0, 2024, 1, "yellow"),
            (datetime(2024, 1, 15, 12, 0), None, 161, 237, 2.0, 900.0, 2024, 1, "yellow"),
            (datetime(2024, 1, 15, 18, 0), 1, 132, 161, 5.0, 1800.0, 2024, 1, "yellow"),
        ],
        "pickup_datetime timestamp, passenger_count int, pickup_location_id int, dropoff_location_id int, "
        "trip_distance double, duration_s double, year int, month int, service string",
    )
    actual = trips(spark, tmp_path).select(*expected_trips.columns)
    assertDataFrameEqual(actual, expected_trips)

    quarantine = spark.read.parquet(str(tmp_path / "quarantine"))
    malformed = quarantine.filter("reason = 'malformed_row'").select("raw").first()
    assert malformed is not None and '"_corrupt_record":"1,2024-01-15 15:00:00"' in malformed["raw"]
    bad_number = quarantine.filter("reason = 'unparseable_number'").select("reason_detail", "raw").first()
    assert bad_number is not None
    assert bad_number["reason_detail"] == "trip_distance"
    assert '"trip_distance":"abc"' in bad_number["raw"]


def test_reingesting_a_file_replaces_its_rows_and_keeps_other_files(spark: SparkSession, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "a.csv", HEADER, [YELLOW_LINES[0][0], YELLOW_LINES[6][0]], trailing_newline=True)
    second = write_csv(tmp_path / "b.csv", HEADER, [YELLOW_LINES[14][0]])
    ingest(spark, tmp_path, [first, second])
    ingest(spark, tmp_path, [first])
    counts = {
        row["source_file"]: row["count"] for row in trips(spark, tmp_path).groupBy("source_file").count().collect()
    }
    assert counts == {first: 2, second: 1}


def test_each_file_is_counted_as_read_and_reconciled_on_its_own(spark: SparkSession, tmp_path: Path) -> None:
    # two files without a repeated id (Spark's planner would drop their branch, and the observed count, if let)
    # and one with a repeated line; the rows read are counted by the duplicate check's job, per file
    plain = write_csv(tmp_path / "a.csv", HEADER, [YELLOW_LINES[0][0], YELLOW_LINES[6][0]])
    single = write_csv(tmp_path / "b.csv", HEADER, [YELLOW_LINES[14][0]])
    twice = write_csv(tmp_path / "c.csv", HEADER, [YELLOW_LINES[0][0], YELLOW_LINES[0][0], YELLOW_LINES[2][0]])
    report = ingest(spark, tmp_path, [plain, single, twice])
    counts = {f.path: (f.rows_in, f.rows_clean, f.rows_quarantined) for f in report.files}
    assert counts == {plain: (2, 2, 0), single: (1, 1, 0), twice: (3, 1, 2)}
    assert report.by_reason == {"duplicate_row": 1, "duration_too_short": 1}

    # a file whose rows read differ from what was written is named, even when the totals would add up
    formats = {f.path: f.format for f in report.files}
    ids = sorted({source.source_id for source in expand_sources([plain, single, twice])})
    off = {plain: 3, single: 0, twice: 3}
    with pytest.raises(ReconciliationError, match=r"a\.csv: ingest counts do not reconcile: rows_in 3 != clean 2"):
        _report(spark, formats, ids, off, tmp_path / "trips", tmp_path / "quarantine")


def test_parquet_type_drift_between_months_normalises_to_the_same_values(spark: SparkSession, tmp_path: Path) -> None:
    def month(passenger_type: pa.DataType, fee_name: str, day: int) -> str:
        table = pa.table(
            {
                "VendorID": pa.array([2], pa.int32()),
                "tpep_pickup_datetime": pa.array([datetime(2023, day, 3, 7, 0)], pa.timestamp("us")),
                "tpep_dropoff_datetime": pa.array([datetime(2023, day, 3, 7, 25)], pa.timestamp("us")),
                "passenger_count": pa.array([2], passenger_type),
                "trip_distance": pa.array([4.2], pa.float64()),
                "RatecodeID": pa.array([1], passenger_type),
                "PULocationID": pa.array([138], pa.int32()),
                "DOLocationID": pa.array([230], pa.int32()),
                "fare_amount": pa.array([21.9], pa.float64()),
                fee_name: pa.array([1.75], pa.float64()),
            }
        )
        path = tmp_path / f"yellow_tripdata_2023-{day:02d}.parquet"
        pq.write_table(table, path)
        return str(path)

    paths = [month(pa.int64(), "airport_fee", 1), month(pa.float64(), "Airport_fee", 2)]
    report = ingest(spark, tmp_path, paths)
    assert (report.rows_clean, report.rows_quarantined) == (2, 0)
    expected = spark.createDataFrame(
        [(datetime(2023, m, 3, 7, 0), 2, 2, 4.2, 138, 230, 1500.0, m) for m in (1, 2)],
        "pickup_datetime timestamp, vendor_id int, passenger_count int, trip_distance double, "
        "pickup_location_id int, dropoff_location_id int, duration_s double, month int",
    )
    assertDataFrameEqual(trips(spark, tmp_path).select(*expected.columns), expected)


def test_kaggle_train_and_test_files(spark: SparkSession, tmp_path: Path) -> None:
    header = (
        "id,vendor_id,pickup_datetime,dropoff_datetime,passenger_count,pickup_longitude,pickup_latitude,"
        "dropoff_longitude,dropoff_latitude,store_and_fwd_flag,trip_duration"
    )
    train = write_csv(
        tmp_path / "train.csv",
        header,
        [
            "id2875421,2,2016-03-14 17:24:55,2016-03-14 17:32:30,1,-73.982155,40.767937,-73.96463,40.765602,N,455",
            "id0000001,1,2016-03-14 18:00:00,2016-03-14 18:10:00,1,0,0,0,0,N,600",
        ],
    )
    test_header = "id,vendor_id,pickup_datetime,passenger_count,pickup_longitude,pickup_latitude,"
    test_header += "dropoff_longitude,dropoff_latitude,store_and_fwd_flag"
    test = write_csv(
        tmp_path / "test.csv",
        test_header,
        ["id3004672,1,2016-06-30 23:59:58,1,-73.988129,40.732029,-73.990173,40.75668,N"],
    )
    report = ingest(spark, tmp_path, [train, test])
    assert report.by_reason == {"coordinates_outside_nyc": 1}
    expected = spark.createDataFrame(
        [
            ("kaggle", datetime(2016, 3, 14, 17, 24, 55), 40.767937, -73.982155, 455.0),
            ("kaggle", datetime(2016, 6, 30, 23, 59, 58), 40.732029, -73.988129, None),
        ],
        "service string, pickup_datetime timestamp, pickup_latitude double, pickup_longitude double, duration_s double",
    )
    assertDataFrameEqual(trips(spark, tmp_path).select(*expected.columns), expected)


def test_fhv_trip_without_zones_is_quarantined_as_no_location(spark: SparkSession, tmp_path: Path) -> None:
    header = "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag"
    path = write_csv(
        tmp_path / "fhv_tripdata_2019-02.csv",
        header,
        [
            "B00013,2019-02-01 00:01:00,2019-02-01 00:21:00,,,",
            "B00021,2019-02-01 00:10:00,2019-02-01 00:31:00,74,41,",
        ],
    )
    report = ingest(spark, tmp_path, [path])
    assert report.by_reason == {"no_location": 1}
    row = trips(spark, tmp_path).select("service", "pickup_location_id", "duration_s", "trip_distance").first()
    assert row is not None and tuple(row) == ("fhv", 74, 1260.0, None)


def test_real_sample_counts_reconcile_and_reasons_are_as_measured(
    spark: SparkSession, tmp_path: Path, data_dir: Path
) -> None:
    report = ingest(spark, tmp_path, [str(data_dir / "taxis_sample_2019-03.csv")])
    assert (report.rows_in, report.rows_clean, report.rows_quarantined) == (6500, 6352, 148)
    assert report.by_reason == {
        "duration_too_short": 79,
        "duration_too_long": 23,
        "unknown_zone": 34,
        "zero_distance": 11,
        "implausible_speed": 1,
    }
    by_service = {r["service"]: r["count"] for r in trips(spark, tmp_path).groupBy("service").count().collect()}
    assert sum(by_service.values()) == 6352
    assert set(by_service) == {"yellow", "green"}  # the `color` column decides per row


def test_unknown_format_fails_before_anything_is_written(spark: SparkSession, tmp_path: Path) -> None:
    good = write_csv(tmp_path / "good.csv", HEADER, [YELLOW_LINES[0][0]])
    weird = write_csv(tmp_path / "weather.csv", "city,temperature", ["NYC,3"])
    with pytest.raises(UnknownFormatError, match=r"weather.csv: columns match no known trip format; found \[city"):
        run_ingest(spark, [good, weird], tmp_path / "trips", tmp_path / "quarantine", QualityParams())
    assert not (tmp_path / "trips").exists()
    assert not (tmp_path / "quarantine").exists()


def test_missing_path_is_a_clear_error(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match=r"nope\.csv: no such file or folder"):
        run_ingest(spark, [str(tmp_path / "nope.csv")], tmp_path / "t", tmp_path / "q", QualityParams())


def test_duplicate_ids_mark_all_copies_but_one(spark: SparkSession, tmp_path: Path) -> None:
    line = YELLOW_LINES[0][0]
    path = write_csv(tmp_path / "dups.csv", HEADER, [line, line, line, YELLOW_LINES[6][0]])
    report = ingest(spark, tmp_path, [path])
    assert (report.rows_clean, report.by_reason) == (2, {"duplicate_row": 2})
    assert trips(spark, tmp_path).select(F.countDistinct("trip_id")).first()[0] == 2


def test_duplicates_in_two_files_are_counted_per_file(spark: SparkSession, tmp_path: Path) -> None:
    # the duplicate check's ids are counted once per ingest and shared by both writes: per file, never across
    line, other = YELLOW_LINES[0][0], YELLOW_LINES[6][0]
    first = write_csv(tmp_path / "a.csv", HEADER, [other, line, line])
    second = write_csv(tmp_path / "b.csv", HEADER, [line, other, other, other])
    report = ingest(spark, tmp_path, [first, second])
    by_file = {Path(f.path).name: (f.rows_clean, f.rows_quarantined) for f in report.files}
    assert by_file == {"a.csv": (2, 1), "b.csv": (2, 2)}
    assert report.by_reason == {"duplicate_row": 3}


def test_every_unparseable_field_is_named_timestamps_first(spark: SparkSession, tmp_path: Path) -> None:
    lines = [
        "1,2024-01-15 14:00:00,2024-01-15 14:10:00,x,abc,161,237,8.0,0,none",
        "1,soon,later,1,abc,161,237,8.0,0,8.0",
    ]
    ingest(spark, tmp_path, [write_csv(tmp_path / "bad.csv", HEADER, lines)])
    quarantine = spark.read.parquet(str(tmp_path / "quarantine")).select("reason", "reason_detail")
    assert sorted(map(tuple, quarantine.collect())) == [
        ("unparseable_number", "passenger_count,trip_distance,total_amount"),
        ("unparseable_timestamp", "pickup_datetime,dropoff_datetime"),
    ]


def test_green_csv_uses_lpep_times(spark: SparkSession, tmp_path: Path) -> None:
    header = (
        "VendorID,lpep_pickup_datetime,lpep_dropoff_datetime,store_and_fwd_flag,RatecodeID,PULocationID,"
        "DOLocationID,passenger_count,trip_distance,fare_amount,extra,mta_tax,tip_amount,tolls_amount,ehail_fee,"
        "improvement_surcharge,total_amount,payment_type,trip_type,congestion_surcharge"
    )
    path = write_csv(
        tmp_path / "green_tripdata_2019-03.csv",
        header,
        ["2,2019-03-01 08:10:00,2019-03-01 08:31:30,N,1,74,75,1,2.9,13.5,0,0.5,0,0,,0.3,14.3,2,1,0"],
    )
    report = ingest(spark, tmp_path, [path])
    assert (report.rows_clean, report.files[0].format) == (1, "green")
    row = trips(spark, tmp_path).select("service", "pickup_datetime", "duration_s", "fare_amount").first()
    assert row is not None and tuple(row) == ("green", datetime(2019, 3, 1, 8, 10), 1290.0, 13.5)


def test_empty_and_corrupt_files_are_clear_errors_and_write_nothing(spark: SparkSession, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    corrupt = tmp_path / "yellow_tripdata_2024-01.parquet"
    corrupt.write_bytes(b"not parquet at all")
    with pytest.raises(UnreadableInputError, match=r"empty\.csv: empty file, expected a header line"):
        run_ingest(spark, [str(empty)], tmp_path / "trips", tmp_path / "quarantine", QualityParams())
    with pytest.raises(
        UnreadableInputError,
        match=r"2024-01\.parquet: cannot read as parquet \(\[FAILED_READ_FILE.CANNOT_READ_FILE_FOOTER\]",
    ):
        run_ingest(spark, [str(corrupt)], tmp_path / "trips", tmp_path / "quarantine", QualityParams())
    assert not (tmp_path / "trips").exists()


def test_header_only_file_ingests_zero_rows(spark: SparkSession, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "header_only.csv", HEADER, [])
    report = ingest(spark, tmp_path, [path])
    assert (report.rows_in, report.rows_clean, report.rows_quarantined) == (0, 0, 0)


def test_sql_conf_holds_inside_the_block_and_restores_after(spark: SparkSession) -> None:
    bypass = "spark.sql.execution.bypassPartialAggregation"
    partitions = "spark.sql.shuffle.partitions"
    spark.conf.unset(bypass)
    before = spark.conf.get(partitions)
    with sql_conf(spark, {**BYPASS_PARTIAL_AGGREGATION, partitions: "3"}):
        assert (spark.conf.get(bypass), spark.conf.get(partitions)) == ("true", "3")
    assert (spark.conf.get(bypass), spark.conf.get(partitions)) == ("false", before)  # false: Spark's default


def test_empty_branches_are_kept_besides_the_rules_excluded_already(spark: SparkSession) -> None:
    key = "spark.sql.adaptive.optimizer.excludedRules"
    rule = "org.apache.spark.sql.execution.adaptive.AQEPropagateEmptyRelation"
    spark.conf.unset(key)
    assert keep_empty_branches(spark) == {key: rule}
    other = "org.apache.spark.sql.execution.adaptive.AQEOptimizer"
    with sql_conf(spark, {key: other}):
        assert keep_empty_branches(spark) == {key: f"{other},{rule}"}
    with sql_conf(spark, {key: rule}):
        assert keep_empty_branches(spark) == {key: rule}


def test_file_splits_are_pinned_to_the_parallelism_of_the_moment(spark: SparkSession) -> None:
    key = "spark.sql.files.minPartitionNum"
    spark.conf.unset(key)
    pinned = stable_file_splits(spark)
    assert pinned == {key: str(spark.sparkContext.defaultParallelism)}
    with sql_conf(spark, {key: "5"}):
        assert stable_file_splits(spark) == {}  # given already: left alone
    assert spark.conf.get(key, None) is None
