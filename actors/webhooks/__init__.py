"""Completion and alert webhooks: what to send, when and to whom (rules), and sending it (sender)."""
