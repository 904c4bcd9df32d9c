"""genqueue's actors: the QueueActor, the KeyPoolActor, the workers, and the pure decisions they run."""
