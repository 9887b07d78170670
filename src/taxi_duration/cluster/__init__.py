"""Run Spark beyond one machine: a standalone cluster managed from the pip-installed pyspark."""

from taxi_duration.cluster.standalone import ClusterInfo, cluster_status, start_cluster, stop_cluster

__all__ = ["ClusterInfo", "cluster_status", "start_cluster", "stop_cluster"]
