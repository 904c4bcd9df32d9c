"""The HTTP API: the replica's clients, shared dependencies, one router per job, and the app."""
