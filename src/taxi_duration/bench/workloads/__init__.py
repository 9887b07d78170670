"""The engine comparison workload, defined once and implemented per engine (pandas, Polars, DuckDB, Spark).

Input: one month of generated TLC yellow trips (`taxi-duration generate --months 1`), as Parquet and as CSV.
Every engine computes exactly this:

1. **Borough report** (Parquet): read `tpep_pickup_datetime`, `tpep_dropoff_datetime`, `PULocationID`,
   `DOLocationID`, `trip_distance`; `duration_s` = dropoff - pickup in seconds (instants, so a daylight-saving
   change does not distort it); valid trips have both times and `MIN_DURATION_S <= duration_s <= MAX_DURATION_S`.
   Valid trips LEFT JOIN the zone table (package data) on `PULocationID = LocationID`, borough `'Unknown'` when
   the id is not in the table; per pickup borough: `trips` (count) and `mean_duration_s`. Also `rows_read` and
   `valid_trips`.
2. **Features** of the valid trips, written as a Parquet table: `pickup_hour` (0-23) and `pickup_day` (day of
   month) and `pickup_weekday` (1 = Monday .. 7) in New York wall-clock time, `is_weekend` (weekday 6 or 7),
   `trip_distance`, `centroid_miles` (haversine between the pickup and dropoff zone centroids, 0 when either zone
   has no centroid), `pickup_borough_code` / `dropoff_borough_code` (`zones.BOROUGH_CODES`, 0 when unknown),
   `pickup_epoch_s` (Unix seconds of the pickup), label `duration_min`. Summary: row count and the sum of every
   column (integers exact).
3. **Training** (pandas with scikit-learn, Spark with MLlib; Polars and DuckDB stop at the features): trips
   picked up on days 1..`TRAIN_LAST_DAY` train, later ones validate (time-based split). Both sets are capped by
   the same deterministic rule so all engines use the same trips: keep a trip when `pickup_epoch_s % 1000 < k`,
   `k = ceil(1000 * cap / size)` (cap `train_rows` for training, `train_rows / 4` for validation). Models: gradient
   boosting (`BOOST_ITERATIONS` trees of depth `BOOST_DEPTH`, learning rate 0.1) and random forest (`FOREST_TREES`
   trees of depth `FOREST_DEPTH`, `FOREST_FEATURES` features per split) on `FEATURES`; RMSE of `duration_min`
   on the validation trips.
4. **CSV load**: read the CSV copy with the five columns typed on read (times as `yyyy-MM-dd HH:mm:ss` wall-clock
   strings), compute `duration_s` and the valid trips as in 1; summary: `rows_read`, `valid_trips`,
   `sum_duration_s`. The CSV holds wall-clock New York times: pandas, Polars and DuckDB subtract them as naive
   times, Spark as New York times; they agree unless the month has a daylight-saving change (January does not).

Timestamps: the generator writes Parquet from a Spark session in New York time as INT96, i.e. UTC instants
without a zone annotation. Spark reads them back as instants and shows New York time; pyarrow (pandas), Polars
and DuckDB read the same values as *naive UTC*, so those engines convert UTC -> America/New_York before taking
hour, weekday and day (checked: without it the hour differs by 5 for January trips).

Run one engine in this process: `python -m taxi_duration.bench.workloads ENGINE --parquet DIR --csv DIR --out DIR`;
prints one JSON object (results and per-step seconds). A memory failure exits with `EXIT_OOM`.

Modules: `common` (the constants above, the zone table, the capping rule, step timing), one `engine_*` module per
engine, `__main__` (the command line above).
"""
