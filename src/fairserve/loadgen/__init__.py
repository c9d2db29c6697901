"""Load generation over HTTP: replay a workload against an OpenAI-compatible server."""
