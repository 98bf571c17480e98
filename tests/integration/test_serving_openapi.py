"""The server's OpenAPI document, judged by schemathesis: it generates requests from the document
(bounded in examples) against a `dlzoo serve` subprocess, and no answer may be a 5xx, an
undocumented status code, or a body that breaks the documented schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_serving_server import start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_schema(tiny_repository):
    process, rest, _ = start_server(tiny_repository, "--model", "mlp_vector", "--model", "rnn_text")
    try:
        yield schemathesis.openapi.from_url(f"http://{rest}/openapi.json")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_document_describes_the_infer_request_response_and_error_bodies(api_schema):
    document = api_schema.raw_schema
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    body = infer["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/InferenceRequest"}
    components = document["components"]["schemas"]
    assert {"InferenceRequest", "RequestInput", "InferenceResponse", "ErrorResponse"} <= set(components)
    assert components["InferenceRequest"]["required"] == ["inputs"]
    assert {"200", "400", "404", "413", "503", "504"} <= set(infer["responses"])


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
BOUNDED = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def test_generated_requests_get_documented_answers_and_never_a_5xx(api_schema):
    # schemathesis' pytest plugin does not load under this pytest; its strategies run under hypothesis.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @BOUNDED
        @given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(checks=CHECKS, timeout=30)

        check()
