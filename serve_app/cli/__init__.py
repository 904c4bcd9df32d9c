"""The `genqueue` command line: start and stop, tokens and credits, audits, load tests and plans."""
