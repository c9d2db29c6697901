"""The discrete-event simulator of LLM serving engines and clusters."""
