"""`python -m taxi_duration.cli ...`, as the `taxi-duration` script."""

from taxi_duration.cli import main

main()
