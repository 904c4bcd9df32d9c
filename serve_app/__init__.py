"""genqueue's edge: the HTTP API on Ray Serve, the embedded runtime and the `genqueue` CLI."""
