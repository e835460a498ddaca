//! What the OpenAPI document says alike for every route, added in one place
//! so a new route cannot forget it: the `id` path parameter, the
//! `Idempotency-Key` header, and the error responses that come from the
//! shared extractors and middleware rather than from the handler (401, 429
//! and 403 from `authorize`, 431 and 408 from the limits, 400 and 413 from
//! `JsonBody` and `QueryMap`, 409 from an idempotency key reused, 503 from the
//! store). Every error response is one of
//! the shared `components/responses`, each with the `ErrorBody` schema.
//!
//! It only describes; it never changes what a route does.

use super::extract::BODY_BYTES_MAX;
use crate::wire::IDEMPOTENCY_KEY_MAX;
use utoipa::Modify;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    Components, ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, Required, Response,
    ResponseBuilder,
};

/// The shared error responses: status, component name, description.
const ERROR_RESPONSES: [(&str, &str, &str); 11] = [
    (
        "400",
        "BadRequest",
        "Invalid request: malformed JSON or query, an unknown, missing or invalid field (`param` names it), or a bad `Idempotency-Key`. Nothing changed.",
    ),
    (
        "401",
        "Unauthorized",
        "No API key, or not a valid one (`missing_api_key`, `invalid_api_key`).",
    ),
    (
        "402",
        "InsufficientBalance",
        "`insufficient_balance`: more than is spendable. Nothing changed.",
    ),
    (
        "403",
        "Forbidden",
        "`insufficient_scope`: the API key's scope does not cover this route.",
    ),
    ("404", "NotFound", "No such object (`resource_not_found`)."),
    (
        "408",
        "RequestTimeout",
        "`request_timeout`: the request body did not arrive in time (`--request-timeout-seconds`). Nothing changed.",
    ),
    (
        "409",
        "Conflict",
        "A conflict with the current state, such as `idempotency_key_reused`, `wallet_exists` or `promotion_locked`. Nothing changed.",
    ),
    (
        "413",
        "PayloadTooLarge",
        "`body_too_large`: the request body is over the limit (bytes:",
    ),
    (
        "429",
        "TooManyRequests",
        "`rate_limited`: this API key is over its rate (`--rate-limit-per-key`); `Retry-After` says when to call again. Nothing changed.",
    ),
    (
        "431",
        "HeadersTooLarge",
        "`headers_too_large`: the request headers are over 16 KiB. Nothing changed.",
    ),
    (
        "503",
        "ServiceUnavailable",
        "`service_unavailable`: the store could not be reached. Nothing changed; retry with the same `Idempotency-Key`.",
    ),
];

pub struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (status, name, description) in ERROR_RESPONSES {
            let description = match status {
                "413" => format!("{description} {BODY_BYTES_MAX}). Nothing changed."),
                _ => description.to_string(),
            };
            components.responses.insert(
                name.to_string(),
                RefOr::T(error_response(status, &description)),
            );
        }
        let components = openapi.components.as_ref().expect("just set");
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                ("GET", &mut item.get),
                ("POST", &mut item.post),
                ("PATCH", &mut item.patch),
                ("DELETE", &mut item.delete),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    document(path, method, operation);
                    optional_empty_body(operation, components);
                }
            }
        }
    }
}

fn error_response(status: &str, description: &str) -> Response {
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    if status == "429" {
        response.headers.insert(
            "Retry-After".to_string(),
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                    .description(Some(
                        "Whole seconds (at least 1) to wait before calling again.",
                    ))
                    .build(),
            ),
        );
    }
    response
}

fn document(path: &str, method: &str, operation: &mut Operation) {
    if !path.starts_with("/v1/") {
        // `/healthz` takes no key: override the document-wide requirement.
        operation.security = Some(vec![SecurityRequirement::default()]);
        return;
    }
    if path.contains("{id}") && !has_parameter(operation, "id") {
        add_parameter(operation, id_parameter(path));
    }
    let test_clock = path.starts_with("/v1/test_clock");
    // Every /v1 call is authenticated, then rate limited by key; headers
    // over the limit are refused before routing.
    let mut statuses = vec!["401", "429", "431"];
    // Reads need the lowest scope, so only writes can be refused for scope.
    if method != "GET" {
        statuses.push("403");
    }
    if method == "POST" || method == "PATCH" {
        statuses.extend(["400", "408", "413"]);
    }
    if method == "POST" && !test_clock {
        add_parameter(operation, idempotency_key_parameter());
        statuses.extend(["400", "409"]);
        mark_replays(operation);
    }
    if has_query_parameters(operation) {
        statuses.push("400");
    }
    if !test_clock {
        statuses.push("503");
    }
    let responses = &mut operation.responses.responses;
    for status in statuses {
        responses
            .entry(status.to_string())
            .or_insert(RefOr::T(Response::default()));
    }
    // Every error status, annotated on the handler or added above, points at
    // the one shared response for it.
    for (status, response) in responses.iter_mut() {
        if let Some((_, name, _)) = ERROR_RESPONSES.iter().find(|(s, _, _)| s == status) {
            *response = RefOr::Ref(Ref::from_response_name(*name));
        }
    }
}

/// An empty body stands for `{}` (see `JsonBody`), so a body whose schema
/// requires no field may be left out: a PATCH that sends nothing changes
/// nothing and answers the object as it is.
fn optional_empty_body(operation: &mut Operation, components: &Components) {
    let Some(RefOr::T(body)) = operation.request_body.as_mut() else {
        return;
    };
    let requires_nothing = body.content.values().all(|content| {
        let RefOr::T(content) = content else {
            return false;
        };
        let Some(RefOr::Ref(reference)) = &content.schema else {
            return false;
        };
        let name = reference
            .ref_location
            .trim_start_matches("#/components/schemas/");
        matches!(
            components.schemas.get(name),
            Some(RefOr::T(Schema::Object(object))) if object.required.is_empty()
        )
    });
    if requires_nothing {
        body.required = Some(Required::False);
        body.description =
            Some("Every field is optional; an empty body is the same as `{}`.".to_string());
    }
}

fn has_parameter(operation: &Operation, name: &str) -> bool {
    operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p, RefOr::T(p) if p.name == name))
}

fn has_query_parameters(operation: &Operation) -> bool {
    operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query))
}

fn add_parameter(operation: &mut Operation, parameter: Parameter) {
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(RefOr::T(parameter));
}

/// `id` in `/v1/<collection>/{id}...`: the object's prefixed id. A malformed
/// or foreign id is answered as unknown (404), like any id that does not exist.
fn id_parameter(path: &str) -> Parameter {
    let collection = path
        .split('/')
        .take_while(|segment| *segment != "{id}")
        .last()
        .unwrap_or("");
    let mut parameter = Parameter::new("id");
    parameter.parameter_in = ParameterIn::Path;
    parameter.required = Required::True;
    parameter.description = Some(format!(
        "The id of an object of `/v1/{collection}`; an id that is malformed or of another type is unknown (404)."
    ));
    parameter.schema = Some(ObjectBuilder::new().schema_type(Type::String).into());
    parameter
}

fn idempotency_key_parameter() -> Parameter {
    let mut parameter = Parameter::new("Idempotency-Key");
    parameter.parameter_in = ParameterIn::Header;
    parameter.required = Required::False;
    parameter.description = Some(
        "Makes a retry safe (SPEC rule 18): a repeat with the same key and request returns the first response again, with `Idempotent-Replayed: true`; the same key with another request is refused (409 `idempotency_key_reused`). Visible ASCII characters."
            .to_string(),
    );
    parameter.schema = Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(IDEMPOTENCY_KEY_MAX))
            .pattern(Some("^[\\x21-\\x7e]+$"))
            .into(),
    );
    parameter
}

/// A replay answers with the first response and this header.
fn mark_replays(operation: &mut Operation) {
    if let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") {
        ok.headers.insert(
            "Idempotent-Replayed".to_string(),
            RefOr::T(
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["true"])),
                ))
                .description(Some(
                    "`true` when this is the stored first response to an earlier request with the same `Idempotency-Key`; absent otherwise.",
                ))
                .build(),
            ),
        );
    }
}
