"""The partner node: ClientApp, local statistics and the partner's site (data, policy)."""
