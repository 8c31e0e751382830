"""Deployment: a loopback federation of real processes, Docker files."""
