"""Routers, one per feature. Order matters: commands first, the chat catch-all last."""
