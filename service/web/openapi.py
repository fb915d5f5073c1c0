"""The OpenAPI 3.1 document of both webhooks, generated from the pydantic models.

`python -m service.web.openapi` rewrites service/web/openapi.json; a test fails when the
committed file and the models disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from service.end_of_call.models import (
    ChatMessage,
    EndOfCallAccepted,
    EndOfCallPayload,
    ErrorBody,
    PrefetchResponseCurrent,
)

OPENAPI_PATH = Path(__file__).parent / "openapi.json"


PREFETCH_RESPONSE_REF = "#/components/schemas/PrefetchResponseCurrent"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def _query(
    name: str, description: str, required: bool = False, max_length: int = 1024
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string", "minLength": 1 if required else 0, "maxLength": max_length},
    }


def build_document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [
            (EndOfCallPayload, "validation"),
            (ChatMessage, "validation"),
            (EndOfCallAccepted, "serialization"),
            (PrefetchResponseCurrent, "serialization"),
            (ErrorBody, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    auth_errors = {
        "401": _error("Missing or wrong token, or invalid signature."),
        "503": _error("No token configured on Cloud Run (fail closed), or storage unavailable."),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "millis-webhooks",
            "version": "1.0.0",
            "description": "The Millis AI prefetch and end-of-call webhooks, landed on Firestore "
            "and BigQuery.",
        },
        "security": [{"bearer": []}, {"tokenHeader": []}, {"tokenQuery": []}],
        "paths": {
            "/prefetch": {
                "get": {
                    "operationId": "prefetch",
                    "summary": "Caller profile for the agent's prompt, before the call starts.",
                    "description": "Every other query parameter is call metadata (up to 100 "
                    "parameters; names up to 128 and values up to 1024 characters).",
                    "parameters": [
                        _query("agent_id", "Millis agent id.", required=True, max_length=256),
                        _query("session_id", "Millis session id.", required=True, max_length=256),
                        _query("from", "Phone number (phone calls only).", max_length=64),
                        _query("to", "Phone number (phone calls only).", max_length=64),
                    ],
                    "responses": {
                        "200": {
                            "description": "The current shape {metadata, extra_prompt}, or the "
                            "original flat object when the agent asks for it; {} when nothing "
                            "is known.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "anyOf": [
                                            {"$ref": PREFETCH_RESPONSE_REF},
                                            {"type": "object"},
                                        ]
                                    }
                                }
                            },
                        },
                        "400": _error(
                            "Missing agent_id/session_id, either sent twice with different "
                            "values (ambiguous_parameter), or parameters over the limits."
                        ),
                        "414": _error("Query string too long."),
                        **auth_errors,
                    },
                }
            },
            "/end-of-call": {
                "post": {
                    "operationId": "endOfCall",
                    "summary": "Store a finished call in BigQuery (or as a dead letter).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EndOfCallPayload"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Stored: inserted into BigQuery, or kept as a dead "
                            "letter to be replayed.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/EndOfCallAccepted"}
                                }
                            },
                        },
                        "400": _error(
                            "Invalid JSON, nested too deep, or not a Millis end-of-call payload."
                        ),
                        "413": _error("Body larger than MAX_BODY_BYTES."),
                        "415": _error("Content-Type is not application/json."),
                        **auth_errors,
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "summary": "Liveness and startup probe of Cloud Run: answers without calling "
                    "any dependency.",
                    "responses": {"200": {"description": "Serving."}},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "security": [],
                    "summary": "The same as /health, for local tools (Cloud Run reserves some "
                    "paths ending in z).",
                    "responses": {"200": {"description": "Serving."}},
                }
            },
        },
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "tokenHeader": {"type": "apiKey", "in": "header", "name": "X-Webhook-Token"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }


def render() -> str:
    return json.dumps(build_document(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    OPENAPI_PATH.write_text(render())
    print(f"wrote {OPENAPI_PATH}")
