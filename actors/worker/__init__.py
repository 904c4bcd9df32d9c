"""Worker actors: the pure mapping from an attempt's ending to its events, and the shell around it."""
