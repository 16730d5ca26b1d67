"""The OpenAPI description of every route, exact enough to test the server
against (tests/test_openapi.py runs schemathesis on it): each status code and
content type a route answers, the body of each, and the create form's rule
"exactly one image source"."""

from __future__ import annotations

from typing import Any

from clothseg.api.form import CHOICES, IDEMPOTENCY_KEY_PATTERN
from clothseg.engine.taxonomy import API_CLASSES
from clothseg.imaging.fetch import BLANK_PATTERN, URL_PATTERN
from clothseg.tasks.states import TaskState

Schema = dict[str, Any]

STATUS_MEANINGS = {
    200: "Success. For a task, look at data.state: 1 done, >1 running, <0 failed (message says why).",
    400: "A parameter is missing, doubled or invalid; the message names the field.",
    401: "Missing, unknown or revoked X-API-KEY.",
    402: "The key has fewer than 3 available credits.",
    404: "No such task for this key (or it expired), or the result link is invalid or expired.",
    409: "The Idempotency-Key was already used with a different request.",
    413: "The upload exceeds 20 MB.",
    429: "The key's QPS limit is exceeded, or the task queue is full.",
    500: "Unexpected server error.",
}

TIMESTAMP: Schema = {"type": "string", "pattern": "^[0-9]+$", "description": "Unix seconds"}
TASK: Schema = {
    "type": "object",
    "required": ["task_id", "state", "progress", "output_type", "created_at"],
    "properties": {
        "task_id": {"type": "string"},
        "state": {"type": "integer", "enum": sorted(int(s) for s in TaskState),
                  "description": "1 succeeded, >1 running, 0 queued, <0 failed (see docs/API.md)"},
        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        "output_type": {"type": "integer", "enum": [1, 2, 3]},
        "created_at": TIMESTAMP,
        "processed_at": TIMESTAMP,
        "completed_at": TIMESTAMP,
        "class_masks": {"type": "object", "propertyNames": {"enum": list(API_CLASSES)},
                        "additionalProperties": {"type": "string"},
                        "description": "class -> signed link to an 8-bit PNG (or its base64)"},
        "clothes_masks": {"type": "string", "description": "signed link to the ZIP (or its base64)"},
    },
    "additionalProperties": False,
}
CREATED: Schema = {"type": "object", "required": ["task_id"], "properties": {"task_id": {"type": "string"}},
                   "additionalProperties": False}
HEALTH: Schema = {
    "type": "object", "required": ["version", "queue_depth", "workers", "components"], "additionalProperties": False,
    "properties": {"version": {"type": "string"}, "queue_depth": {"type": "integer", "minimum": 0},
                   "workers": {"type": "integer", "minimum": 1,
                               "description": "worker threads (embedded) or live `clothseg worker` processes"},
                   "components": {"type": "object", "additionalProperties": {"const": "ok"},
                                  "description": "database, qps_limiter, storage, queue and, in the scale-out, "
                                                 "workers: each \"ok\" (else the answer is 500 naming what "
                                                 "failed)"}},
}
ACCOUNT: Schema = {
    "type": "object", "required": ["credits", "held", "available", "task_cost", "qps"], "additionalProperties": False,
    "properties": {"credits": {"type": "integer"}, "held": {"type": "integer"}, "available": {"type": "integer"},
                   "task_cost": {"type": "integer"}, "qps": {"type": "number"}},
}
COMPONENTS: dict[str, Schema] = {"Task": TASK, "Created": CREATED, "Health": HEALTH, "Account": ACCOUNT}

CREATE_FORM: Schema = {
    "type": "object",
    "description": "Exactly one image source: `image_file` (a file part) or `image_url`. An empty "
                   "`image_url` counts as absent (the spec: the other source \"must be empty\"). "
                   "Numbers may be sent as text; unknown fields are ignored; a field sent twice is 400.",
    "properties": {
        "image_file": {"type": "string", "format": "binary", "minLength": 1,
                       "description": "The image (max 20 MB): JPEG, PNG, BMP, WebP, TIFF, SGI, GIF or camera raw."},
        "image_url": {"type": "string", "anyOf": [{"pattern": BLANK_PATTERN}, {"pattern": URL_PATTERN}],
                      "description": "http(s) URL of the image (max 30 MB), or empty when image_file is sent."},
        **{field: {"type": "integer", "enum": list(allowed), "default": default}
           for field, (allowed, default) in CHOICES.items()},
    },
    "oneOf": [
        {"title": "upload", "required": ["image_file"], "properties": {"image_url": {"pattern": BLANK_PATTERN}}},
        {"title": "url", "required": ["image_url"],
         "properties": {"image_file": False, "image_url": {"pattern": URL_PATTERN}}},
    ],
}
IDEMPOTENCY_HEADER: Schema = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    "description": "Extension: retrying with the same key and the same request returns the task the first "
                   "request made (charged once); the same key with a different request is 409.",
}
SECURITY = [{"ApiKey": []}]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _envelope(status: int, data: Schema | None) -> Schema:
    properties: Schema = {"status": {"const": status}, "message": {"type": "string"}}
    if data is not None:
        properties["data"] = data
    return {"type": "object", "required": ["status", "message", *(["data"] if data else [])],
            "properties": properties, "additionalProperties": False}


def responses(ok: Schema | None, *errors: int) -> dict[int | str, Schema]:
    """The 200 answer carrying ``ok`` as data, and error envelopes with these codes."""
    out: dict[int | str, Schema] = {}
    if ok is not None:
        out[200] = {"description": STATUS_MEANINGS[200],
                    "content": {"application/json": {"schema": _envelope(200, ok)}}}
    for code in errors:
        out[code] = {"description": STATUS_MEANINGS[code],
                     "content": {"application/json": {"schema": _envelope(code, None)}}}
    return out


CREATE_OPERATION: Schema = {
    "security": SECURITY,
    "parameters": [IDEMPOTENCY_HEADER],
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": CREATE_FORM}}},
}
CREATE_RESPONSES = responses({"anyOf": [_ref("Created"), _ref("Task")],
                              "description": "sync=0: the task id; sync=1: the task as a query answers it"},
                             400, 401, 402, 404, 409, 413, 429, 500)
TASK_RESPONSES = responses(_ref("Task"), 401, 404, 500)
ACCOUNT_RESPONSES = responses(_ref("Account"), 401, 500)
HEALTH_RESPONSES = responses(_ref("Health"), 500)
RESULT_RESPONSES: dict[int | str, Schema] = {
    200: {"description": "The 8-bit grayscale PNG mask or the ZIP; cacheable until the link expires",
          "content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                      "application/zip": {"schema": {"type": "string", "format": "binary"}}}},
    **responses(None, 404, 500),
}
METRICS_RESPONSES: dict[int | str, Schema] = {
    200: {"description": "Prometheus text exposition format",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
}


def finish(spec: Schema) -> Schema:
    """Add the shared schemas and the key scheme; drop the 422 answers FastAPI
    assumes (validation errors are 400 here, and the routes that can give one say so)."""
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(COMPONENTS)
    components["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"}}
    return spec
