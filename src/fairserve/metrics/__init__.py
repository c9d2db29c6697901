"""Per-request records and the summaries computed from them."""
