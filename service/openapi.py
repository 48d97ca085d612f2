"""The published OpenAPI document (``/docs.json``), made to describe what each route really takes and answers.

BentoML builds it from the API signatures but, flattening each body's schema, drops ``None``
from optional fields (so ``{"model": null}`` looks invalid and a ``null`` in an answer looks
like a broken promise), leaves JSON-Schema-2020 keywords OpenAPI 3.0 lacks in the components,
and lists 400, 404 and 500 as every route's errors. ``OpenAPIDocument`` rewrites the document
as it is served: each BentoML route's request and answer schemas come from its pydantic models,
in OpenAPI 3.0's dialect, its error answers are the ones ``service.routes`` lists, and the
routes that need the admin token say so (Swagger UI's "Authorize" button then sends it).
"""

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from service.http import ASGIApp, ResponseRewriter, Scope
from service.schemas import Readiness

REF_TEMPLATE = "#/components/schemas/{model}"
NULL = {"type": "null"}
JSON = "application/json"
BEARER = {"type": "http", "scheme": "bearer", "description": "the admin token (M2N2_ADMIN_TOKEN)"}


def openapi30(schema: Any) -> Any:
    """A JSON Schema (pydantic's dialect) in OpenAPI 3.0's: ``nullable``, ``enum`` for ``const``, boolean bounds."""
    if isinstance(schema, list):
        return [openapi30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: openapi30(value) for key, value in schema.items()}
    for key in ("anyOf", "oneOf"):
        if NULL not in out.get(key, ()):
            continue
        rest = [option for option in out.pop(key) if option != NULL]
        if len(rest) == 1 and "$ref" in rest[0]:
            out["allOf"] = rest
        elif len(rest) == 1:
            out = {**rest[0], **out}
        elif rest:
            out[key] = rest
        out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[bound], out[exclusive] = value, True
    return out


def _model_schema(spec: type, mode: str, components: dict[str, Any]) -> dict[str, Any]:
    """The pydantic schema of a BentoML IO spec, its definitions moved into ``components``."""
    schema = spec.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = openapi30(definition)
    schema.pop("root_input", None)  # BentoML's own marker, not JSON Schema
    return openapi30(schema)


class OpenAPIDocument(ResponseRewriter):
    """Rewrites ``/docs.json``: faithful body schemas for the BentoML routes and the errors each really answers."""

    ERROR: ClassVar[dict] = {JSON: {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}
    MEANING: ClassVar[dict[int, str]] = {
        400: "a malformed body, or several Authorization headers",
        401: "no bearer token",
        403: "the wrong bearer token",
        404: "an unknown model or task",
        409: "a conflict with the stored state (name taken, already champion, nothing to roll back)",
        413: "the request body is over the size limit",
        415: "a Content-Type other than the route's",
        422: "invalid input; the message names the field",
        503: "no champion loaded yet",
    }

    def __init__(
        self,
        app: ASGIApp,
        apis: Mapping[str, Any],
        errors: dict[str, set[int]],
        protected: set[str],
        path: str = "/docs.json",
    ) -> None:
        super().__init__(app)
        self.apis, self.errors, self.protected, self.path = apis, errors, protected, path
        self._document: bytes | None = None  # the rewrite of the first document BentoML served

    def wants(self, scope: Scope) -> bool:
        return scope["path"] == self.path

    def rewrite(self, status: int, headers: list, body: bytes) -> tuple[int, list, bytes]:
        if status != 200:
            return status, headers, body
        if self._document is None:
            self._document = json.dumps(self.document(json.loads(body))).encode()
        return status, headers, self._document

    def document(self, spec: dict[str, Any]) -> dict[str, Any]:
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        spec["paths"] = openapi30(spec.get("paths", {}))
        spec["components"]["schemas"] = components = openapi30(components)
        for api in self.apis.values():
            operation = spec["paths"].get(api.route, {}).get("post")
            if operation is not None:
                self._bodies(operation, api, components)
                self._errors(operation, self.errors.get(api.route, set()))
        if readyz := spec["paths"].get("/readyz", {}).get("get"):
            schema = openapi30(Readiness.model_json_schema(ref_template=REF_TEMPLATE))
            readyz["responses"] = {
                "200": {"description": "ready: what this worker serves", "content": {JSON: {"schema": schema}}},
                "503": {"description": "no champion loaded yet"},
            }
        spec["components"]["securitySchemes"] = {"adminToken": BEARER}
        for route in self.protected:
            for operation in spec["paths"].get(route, {}).values():
                operation["security"] = [{"adminToken": []}]
        return spec

    def _bodies(self, operation: dict[str, Any], api: Any, components: dict[str, Any]) -> None:
        media = api.input_spec.mime_type()
        published = operation["requestBody"]["content"][media]
        schema = _model_schema(api.input_spec, "validation", components)
        for field in api.input_spec.multipart_fields:  # an uploaded file: BentoML's own entry says so
            schema["properties"][field] = published["schema"]["properties"][field]
        published["schema"] = schema
        operation["requestBody"]["required"] = bool(schema.get("required"))
        if api.output_spec.mime_type() == JSON:
            answer = operation["responses"]["200"]["content"][JSON]
            answer["schema"] = _model_schema(api.output_spec, "serialization", components)

    def _errors(self, operation: dict[str, Any], codes: set[int]) -> None:
        responses = {k: v for k, v in operation["responses"].items() if k in ("200", "500")}
        for code in sorted(codes):
            responses[str(code)] = {"description": self.MEANING[code], "content": self.ERROR}
        operation["responses"] = responses
