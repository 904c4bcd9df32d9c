"""Image providers: offline (Pillow) and gemini (google-genai)."""
