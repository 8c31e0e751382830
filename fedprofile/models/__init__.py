"""Published models (segments, response) and local scoring."""
