"""The only Ray code: Ray Data graphs, the Ray Train loop and the cluster connection."""
