"""The janitor actor: deletes the blobs of tasks that ended longer ago than their retention."""
