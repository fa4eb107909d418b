"""Load-test kit: sync latency, loss and convergence of any y-websocket server."""
