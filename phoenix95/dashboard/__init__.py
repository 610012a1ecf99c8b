"""`p95 dashboard`: the server-rendered web page (FastAPI, Jinja2, htmx, Server-Sent Events)."""
