"""uvicorn wiring: TLS, the peer certificate in the ASGI scope, both listeners, workers."""
