"""A bare functions-framework hello-world: the cold-start and memory baseline."""

import functions_framework


@functions_framework.http
def hello(request: object) -> tuple[str, int]:
    return "ok", 200
