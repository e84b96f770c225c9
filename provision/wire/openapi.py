"""OpenAPI 3.1 from the wire contract: JSON Schema of each message made from its annotations and ``rule(...)``
limits, and the document of a route table, so nothing about the API is written a second time.

- ``json_schema(kind, components)``: the schema of an annotation (what ``provision.wire.schema`` understands:
  ``str``, ``int``, ``float``, ``bool``, ``None``, ``X | None``, ``Literal``, ``list``, ``tuple``,
  ``dict[str, X]``, ``Any``, nested messages) plus plain dataclasses and string enums (the server's records);
  a message or dataclass becomes ``{"$ref": ...}`` to its entry in ``components``.
- ``Record``: a record's ``to_dict()`` shape (every field present) with the keys it adds or leaves out;
  ``ArrayOf``, ``Inline``: a list of those, a documented shape given as a JSON Schema.
- ``Route``: one call (method, path template from ``provision.wire.paths``, request message, response shape,
  the errors it may answer); ``document(routes, ...)``: the OpenAPI document. Error statuses and bodies
  (``{"error": reason, **public facts}``) come from the error classes' ``status_code`` and ``public_facts``.

Standard library only: the agent imports ``provision.wire``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from provision.errors import InvalidPayload, PayloadTooLarge, ProvisionError, RequestError
from provision.wire.schema import INT_LIMIT, Message, Rule

Schema = dict[str, Any]
REF = "#/components/schemas/"
OPENAPI = "3.1.0"
PROBLEM: Schema = {
    "type": "object",
    "description": "One problem of a refused body: the dotted field path and what is wrong.",
    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
    "required": ["field", "message"],
    "additionalProperties": False,
}
FACTS: dict[str, Schema] = {"problems": {"type": "array", "items": {"$ref": REF + "Problem"}},
                            "bytes": {"type": "integer", "minimum": 0}}  # else: text  # fmt: skip
BODY_ERRORS: tuple[type[ProvisionError], ...] = (RequestError, PayloadTooLarge, InvalidPayload)  # any JSON body


@dataclass(frozen=True)
class Inline:
    """A documented shape: a JSON Schema written where the route is (what no class describes)."""

    schema: Schema
    name: str | None = None  # a component of that name instead of inline


@dataclass(frozen=True)
class ArrayOf:
    """A JSON list of ``item`` (an annotation, a ``Record`` or an ``Inline``)."""

    item: object


@dataclass(frozen=True)
class Record:
    """What ``to_dict()`` of the dataclass ``kind`` gives: every field, less ``omit``, plus ``extra`` (always
    there) and ``optional`` (there when it has a value); ``fields`` replaces a field's annotation (a field whose
    ``to_dict`` is another shape)."""

    kind: type
    name: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)
    optional: Mapping[str, object] = field(default_factory=dict)
    omit: tuple[str, ...] = ()
    fields: Mapping[str, object] = field(default_factory=dict)

    @property
    def component(self) -> str:
        return self.name or self.kind.__name__


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    description: str
    schema: Schema = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Route:
    """One call of the API. ``response``: an annotation, ``Record``, ``ArrayOf`` or ``Inline`` (JSON), or a
    media type (``"application/zstd"``: bytes, not JSON). ``errors``: the error classes it may answer with; the
    body errors (400, 413, 422) are added when it has a ``request``."""

    method: Literal["GET", "POST", "PUT"]
    path: str
    name: str  # operationId
    summary: str
    response: object
    request: type[Message] | None = None
    errors: tuple[type[ProvisionError], ...] = ()
    query: tuple[Param, ...] = ()
    tag: str = "api"
    description: str = ""
    params: Mapping[str, str] = field(default_factory=dict)  # path parameter -> description
    raw_request: str | None = None  # a body that is not JSON: its media type (a capture's chunk upload)
    headers: Mapping[str, str] = field(default_factory=dict)  # a required request header -> description

    @property
    def all_errors(self) -> tuple[type[ProvisionError], ...]:
        return (BODY_ERRORS if self.request is not None else ()) + self.errors


def _doc(obj: object) -> str:
    """A class's or function's docstring as one paragraph per blank line (``""`` if none)."""
    text = getattr(obj, "__doc__", None) or ""
    paragraphs = [" ".join(p.split()).replace("``", "`") for p in re.split(r"\n\s*\n", text.strip())]
    return "\n\n".join(p for p in paragraphs if p)


def _nullable(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, str) and not {"enum", "const"} & schema.keys():
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _discriminator(options: Sequence[Any]) -> str | None:
    """The field that tells a union of messages apart: one whose annotation is a one-value Literal in each."""
    if not all(isinstance(o, type) and issubclass(o, Message) for o in options):
        return None
    names = [typing.get_type_hints(o) for o in options]
    for key in names[0]:
        values = [typing.get_args(n.get(key)) for n in names if typing.get_origin(n.get(key)) is Literal]
        if len(values) == len(options) and all(len(v) == 1 for v in values) and len(set(values)) == len(values):
            return key
    return None


def json_schema(kind: object, components: dict[str, Schema], limits: Rule | None = None) -> Schema:
    """The JSON Schema of ``kind`` (an annotation or a shape) under ``limits``; named shapes go into
    ``components`` and are referenced."""
    limits = limits or Rule()
    if isinstance(kind, Inline):
        if kind.name is None:
            return dict(kind.schema)
        components.setdefault(kind.name, dict(kind.schema))
        return {"$ref": REF + kind.name}
    if isinstance(kind, ArrayOf):
        return {"type": "array", "items": json_schema(kind.item, components)}
    if isinstance(kind, Record):
        if kind.component not in components:
            components[kind.component] = {}  # a placeholder against recursion
            components[kind.component] = _record(kind, components)
        return {"$ref": REF + kind.component}
    origin = typing.get_origin(kind)
    if kind is Any:
        return {}
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        inner = [o for o in options if o is not type(None)]
        if len(inner) == 1:
            one = json_schema(inner[0], components, limits)
            return _nullable(one) if len(inner) < len(options) else one
        alternatives = [json_schema(o, components) for o in options]
        key = _discriminator(inner) if len(inner) == len(options) else None
        if key is None:
            return {"anyOf": alternatives}
        mapping = {typing.get_args(typing.get_type_hints(o)[key])[0]: REF + o.__name__ for o in inner}
        return {"oneOf": alternatives, "discriminator": {"propertyName": key, "mapping": mapping}}
    if kind is type(None) or kind is None:
        return {"type": "null"}
    if origin is Literal:
        values = list(typing.get_args(kind))
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"type": "string", "enum": [m.value for m in kind]}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        name = kind.__name__
        if name not in components:
            components[name] = {}
            components[name] = _message(kind, components)
        return {"$ref": REF + name}
    if kind is bool:
        return {"type": "boolean"}
    if kind is int:
        low = -INT_LIMIT if limits.ge is None else max(-INT_LIMIT, math.ceil(limits.ge))
        return {"type": "integer", "minimum": low, "maximum": INT_LIMIT - 1}
    if kind is float:
        return {"type": "number", **({} if limits.ge is None else {"minimum": limits.ge})}
    if kind is str:
        schema: Schema = {"type": "string"}
        if limits.min_length is not None:
            schema["minLength"] = limits.min_length
        if limits.max_length is not None:
            schema["maxLength"] = limits.max_length
        if limits.pattern is not None:
            schema["pattern"] = f"^(?:{limits.pattern})$"  # the server matches the whole text
        return schema
    if origin is list:
        (item,) = typing.get_args(kind)
        each = Rule(max_length=limits.item_max_length)
        return {"type": "array", "items": json_schema(item, components, each), **_sizes(limits, "Items")}
    if origin is tuple:
        args = typing.get_args(kind)
        items = [json_schema(a, components) for a in args]
        return {"type": "array", "prefixItems": items, "items": False, "minItems": len(args), "maxItems": len(args)}
    if origin is dict:
        _key, item = typing.get_args(kind)
        return {"type": "object", "additionalProperties": json_schema(item, components), **_sizes(limits, "Properties")}
    raise TypeError(f"openapi: annotation {kind!r} is not understood")


def _sizes(limits: Rule, what: str) -> Schema:
    sizes: Schema = {}
    if limits.min_length is not None:
        sizes[f"min{what}"] = limits.min_length
    if limits.max_length is not None:
        sizes[f"max{what}"] = limits.max_length
    return sizes


def _default(f: dataclasses.Field[Any]) -> Schema:
    """``{"default": value}`` for a field whose default is plain JSON (a factory of an empty list or dict too)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
        return {"default": value} if value is None or isinstance(value, str | int | float | bool) else {}
    factory: object = f.default_factory
    if factory is list or factory is dict:
        return {"default": [] if factory is list else {}}
    return {}


def _field(f: dataclasses.Field[Any], kind: object, components: dict[str, Schema]) -> Schema:
    limits: Rule = f.metadata.get("wire", Rule())
    schema = json_schema(kind, components, limits)
    if limits.check is not None:
        name = limits.check.__name__.strip("_").replace("_", " ")
        note = _doc(limits.check).split("\n\n")[0]
        schema = {**schema, "description": f"checked by the server ({name})" + (f": {note}" if note else "")}
    return {**schema, **_default(f)}


def _message(kind: type, components: dict[str, Schema]) -> Schema:
    """A message (or a dataclass): an object of its fields, required those without a default, no other key."""
    hints = typing.get_type_hints(kind)
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for f in dataclasses.fields(kind):
        properties[f.name] = _field(f, hints[f.name], components)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    schema: Schema = {"type": "object", "title": kind.__name__}
    if _doc(kind) and not _doc(kind).startswith(f"{kind.__name__}("):  # not the dataclass's generated one
        schema["description"] = _doc(kind)
    return {**schema, "properties": properties, "required": required, "additionalProperties": False}


def _record(record: Record, components: dict[str, Schema]) -> Schema:
    hints = typing.get_type_hints(record.kind)
    properties: dict[str, Schema] = {}
    for f in dataclasses.fields(record.kind):
        if f.name in record.omit:
            continue
        if f.name not in record.fields:
            properties[f.name] = _field(f, hints[f.name], components)
            continue
        shape = json_schema(record.fields[f.name], components)
        properties[f.name] = _nullable(shape) if type(None) in typing.get_args(hints[f.name]) else shape
    required = [*properties, *record.extra]
    for key, kind in [*record.extra.items(), *record.optional.items()]:
        properties[key] = json_schema(kind, components)
    schema: Schema = {"type": "object", "title": record.component}
    if _doc(record.kind) and not _doc(record.kind).startswith(f"{record.kind.__name__}("):
        schema["description"] = _doc(record.kind)
    return {**schema, "properties": properties, "required": required, "additionalProperties": False}


def error_schema(errors: Sequence[type[ProvisionError]]) -> Schema:
    """The body of an error answer: ``error`` (the reason) and the public facts of ``errors`` (there when known)."""
    facts = sorted({f for e in errors for f in e.public_facts})
    properties: dict[str, Schema] = {"error": {"type": "string", "description": "the reason, in plain words"}}
    properties.update({f: FACTS.get(f, {"type": "string"}) for f in facts})
    return {"type": "object", "properties": properties, "required": ["error"], "additionalProperties": False}


PARAM = re.compile(r"\{([a-z0-9_]+)\}")


def _operation(route: Route, components: dict[str, Schema]) -> Schema:
    op: Schema = {"operationId": route.name, "summary": route.summary, "tags": [route.tag]}
    if route.description:
        op["description"] = route.description
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}, "description": route.params.get(p, p)}
        for p in PARAM.findall(route.path)
    ]
    params += [{"name": q.name, "in": "query", "required": False, "schema": q.schema, "description": q.description}
               for q in route.query]  # fmt: skip
    params += [{"name": h, "in": "header", "required": True, "schema": {"type": "string"}, "description": d}
               for h, d in route.headers.items()]  # fmt: skip
    if params:
        op["parameters"] = params
    if route.raw_request is not None:
        raw = {"type": "string", "contentMediaType": route.raw_request}
        op["requestBody"] = {"required": True, "content": {route.raw_request: {"schema": raw}}}
    if route.request is not None:
        body = json_schema(route.request, components)
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if isinstance(route.response, str):
        content = {route.response: {"schema": {"type": "string", "contentMediaType": route.response}}}
    else:
        content = {"application/json": {"schema": json_schema(route.response, components)}}
    responses: Schema = {"200": {"description": "OK", "content": content}}
    by_status: dict[int, list[type[ProvisionError]]] = {}
    for error in route.all_errors:
        by_status.setdefault(error.status_code, []).append(error)
    for status, errors in sorted(by_status.items()):
        said = " ".join(dict.fromkeys(f"{e.__name__}: {_doc(e).split(chr(10) * 2)[0] or '-'}" for e in errors))
        schema = error_schema(errors)
        responses[str(status)] = {"description": said, "content": {"application/json": {"schema": schema}}}
    op["responses"] = responses
    return op


def document(routes: Sequence[Route], *, title: str, version: str, description: str = "") -> Schema:
    """The OpenAPI 3.1 document of ``routes`` (one operation per method and path)."""
    components: dict[str, Schema] = {"Problem": PROBLEM}
    paths: dict[str, dict[str, Schema]] = {}
    for route in routes:
        methods = paths.setdefault(route.path, {})
        method = route.method.lower()
        if method in methods:
            raise ValueError(f"openapi: {route.method} {route.path} is in the route table twice")
        methods[method] = _operation(route, components)
    info: Schema = {"title": title, "version": version}
    if description:
        info["description"] = description
    tags = sorted({r.tag for r in routes})
    return {
        "openapi": OPENAPI,
        "info": info,
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items()))},
    }
