"""The coordinator: ServerApp, stages (k-means), federation handling and reports."""
