"""The OpenAPI description of the inference bodies, for `/docs` and schema-driven clients.

Declared only: requests are parsed by `protocol` (orjson, then hand checks with messages that
say how to fix the request), which is faster than validating with these models and also reads
the binary tensor extension, which a JSON schema cannot describe.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]


class InputParameters(BaseModel):
    binary_data_size: int | None = Field(
        None, ge=0, description="bytes of this tensor in the binary part of the body, in input order"
    )


class RequestInput(BaseModel):
    name: str = Field(description="the model's input name, from GET /v2/models/{name}")
    shape: list[int] = Field(description="batch first, e.g. [1, 32, 32, 3]; [n] for BYTES text")
    datatype: Datatype = Field(description="the model's datatype, or BYTES (text) / UINT8 (images)")
    parameters: InputParameters | None = None
    data: list[Any] | None = Field(None, description="row-major values, flat or nested to match shape")


class OutputParameters(BaseModel):
    binary_data: bool | None = Field(None, description="answer this output in the binary part of the body")
    classification: int | None = Field(None, ge=0, description="top-k 'probability:index:label' strings")


class RequestOutput(BaseModel):
    name: str
    parameters: OutputParameters | None = None


class RequestParameters(BaseModel):
    binary_data_output: bool | None = Field(
        None, description="every output in binary (tritonclient's default)"
    )
    timeout: int | None = Field(None, ge=0, description="the client's time limit in microseconds; 0: none")


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(None, min_length=1, description="default: every output")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size when sent in binary")
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong and how to fix it")


_ERRORS = {
    400: "the request is malformed or does not fit the model; `error` says why",
    404: "no such model or version",
    413: "the body is over the server's limit (--max-body-mib)",
    503: "the model's queue is full (--max-queue-size) or it stopped serving: retry later",
    504: "no answer within the time limit (--request-timeout-s or the request's `timeout`)",
}


INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{model_version}/infer")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse, "description": _ERRORS[code]} for code in codes}


def _reference(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def infer_paths() -> dict[str, Any]:
    """The infer operation, declared here because its route bypasses FastAPI (see app.py)."""
    errors = {
        str(code): {
            "description": text,
            "content": {"application/json": {"schema": _reference("ErrorResponse")}},
        }
        for code, text in _ERRORS.items()
    }
    ok = {
        "description": "the outputs: JSON, or with binary outputs this JSON followed by their bytes",
        "content": {
            "application/json": {"schema": _reference("InferenceResponse")},
            "application/octet-stream": {},
        },
    }
    paths = {}
    for path in INFER_PATHS:
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("name", "model_version")
            if "{" + name + "}" in path
        ]
        paths[path] = {
            "post": {
                "summary": "Infer",
                "operationId": "infer_versioned" if "versions" in path else "infer",
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _reference("InferenceRequest")}},
                    "description": INFER_BODY,
                },
                "responses": {"200": ok, **errors},
            }
        }
    return paths


INFER_BODY = (
    "JSON as below. With the binary tensor extension, the header "
    "`Inference-Header-Content-Length: <n>` says the first n bytes are this JSON and "
    "the rest are the inputs' bytes (little-endian, row-major; BYTES elements with "
    "4-byte little-endian length prefixes); 0 means the whole body is the single "
    "input of one sample."
)


def components() -> dict[str, Any]:
    """Schemas that the infer operation references by name."""
    schemas = {}
    for model in (InferenceRequest, InferenceResponse, ErrorResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas
