"""Features, defined once as Spark SQL expressions (batch, stream, and the MLlib pipeline itself)."""
