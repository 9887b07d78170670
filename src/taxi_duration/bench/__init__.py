"""Engine comparison benchmark: one workload on pandas, Polars, DuckDB and Spark, measured side by side."""
