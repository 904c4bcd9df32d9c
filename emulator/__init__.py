"""A Gemini-compatible emulator of upstream's wire format and limits: a tool for tests, not an actor."""
