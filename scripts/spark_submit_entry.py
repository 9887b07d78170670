"""spark-submit's primary file: run one `taxi-duration` command in the driver that spark-submit started.

The package itself comes from the wheel passed with `--py-files` (spark-submit puts it on the driver's
PYTHONPATH and copies it to every executor), so the same command runs on standalone, YARN or Kubernetes
by changing `--master`. Use scripts/submit.sh, which builds the wheel and adds the usual options:

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/taxi_duration_predictor-0.1.0-py3-none-any.whl \
        scripts/spark_submit_entry.py --workspace ws ingest src/taxi_duration/data/taxis_sample_2019-03.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import taxi_duration
from taxi_duration.cli import main

if __name__ == "__main__":
    # one line that says which copy of the package the driver runs (the shipped wheel, normally)
    origin = Path(taxi_duration.__file__).parent
    sys.stderr.write(f"taxi-duration {taxi_duration.__version__} from {origin}\n")
    sys.argv[0] = "taxi-duration"
    main()
