"""The front door: HTTP in and out. The gunicorn launcher (server.py), the WSGI guard that refuses
what it can before a body is read (guard.py), routing of a path to its webhook (routes.py), the
checks both webhooks share (checks.py: query bounds, authentication in auth.py), and the OpenAPI
document (openapi.py).

Owns no business logic: what a webhook does lives in service.prefetch and service.end_of_call.
Never imports BigQuery or pydantic at start-up (the prefetch path must stay light).
"""
