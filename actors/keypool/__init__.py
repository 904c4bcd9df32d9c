"""The KeyPoolActor: pool state as a fold over key events, its decisions, the limiter and the shell."""
