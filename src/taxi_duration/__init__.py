"""NYC taxi trip duration prediction on PySpark, MLlib and MLflow."""

__version__ = "0.1.0"
