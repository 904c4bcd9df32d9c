"""The QueueActor: its state (a fold over the stream), its decisions, its alerts and its shell."""
