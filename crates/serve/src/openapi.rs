//! The OpenAPI 3.1 document of the API, generated from the route table in
//! [`crate::app`] (every registered route is documented by construction).

use serde_json::{json, Map, Value};

/// One registered route.
pub(crate) struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    /// The API-key scope it needs, if any.
    pub scope: Option<&'static str>,
    pub summary: &'static str,
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

/// The schema of a JSON object with these `required` and other properties
/// (no others allowed: the tests check real answers against it).
fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties, "additionalProperties": false })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The success answer of a route: description and content.
fn success(route: &RouteDoc) -> Value {
    let json_of = |schema: Value| json!({ "application/json": { "schema": schema } });
    let content = match (route.method, route.path) {
        ("get", "/healthz") => json_of(object(&["status"], json!({ "status": { "const": "ok" } }))),
        ("get", "/readyz") => json_of(object(
            &["status", "model_id", "schema_version"],
            json!({ "status": { "const": "ready" }, "model_id": { "type": "string" }, "schema_version": { "type": "integer" } }),
        )),
        ("get", "/metrics") => json!({ "text/plain": { "schema": { "type": "string" } } }),
        ("get", "/openapi.json") => json_of(json!({ "type": "object", "required": ["openapi", "paths"] })),
        ("get", "/v1/model") => json!({
            "application/json": { "schema": { "type": "object", "description": "The model card" } },
            "text/markdown": { "schema": { "type": "string" } },
            "text/html": { "schema": { "type": "string" } },
        }),
        ("get", "/v1/recommendations/popular") => json_of(object(
            &["items", "personalized", "model_id"],
            json!({
                "items": { "type": "array", "items": object(&["item"], json!({ "item": { "type": "string" } })) },
                "personalized": { "const": false },
                "model_id": { "type": "string" },
            }),
        )),
        ("get", "/v1/items/{id}/similar") => json_of(object(
            &["item", "items", "basis", "model_id"],
            json!({
                "item": { "type": "string" },
                "items": { "type": "array", "items": object(&["item", "similarity"], json!({
                    "item": { "type": "string" }, "similarity": { "type": "number" },
                })) },
                "basis": { "enum": ["item_factors", "none"] },
                "model_id": { "type": "string" },
            }),
        )),
        ("get", "/v1/subjects/{id}/recommendations") => json_of(object(
            &["items", "personalized", "model_id"],
            json!({
                "items": { "type": "array", "items": object(&["item", "score", "because"], json!({
                    "item": { "type": "string" },
                    "score": { "type": "number" },
                    "because": { "type": "array", "items": object(&["item", "kind", "text"], json!({
                        "item": { "type": "string" }, "kind": { "type": "string" }, "text": { "type": "string" },
                    })) },
                })) },
                "personalized": { "type": "boolean" },
                "model_id": { "type": "string" },
            }),
        )),
        ("put", "/v1/subjects/{id}/consent") => json_of(object(
            &["recorded", "subject_was_known"],
            json!({
                "recorded": schema_ref("ConsentRecord"),
                "subject_was_known": { "type": "boolean" },
                "warning": { "type": "string" },
            }),
        )),
        ("get", "/v1/subjects/{id}/consent") => json_of(object(
            &["status", "history"],
            json!({
                "status": { "type": "array", "items": schema_ref("ConsentStatus") },
                "history": { "type": "array", "items": schema_ref("ConsentRecord") },
            }),
        )),
        ("get", "/v1/subjects/{id}/export") => json_of(object(
            &["subject", "exported_at", "consent_status", "consent_history", "events"],
            json!({
                "subject": { "type": "string", "description": "The subject's pseudonym, the only identity hush holds" },
                "exported_at": schema_ref("Timestamp"),
                "consent_status": { "type": "array", "items": schema_ref("ConsentStatus") },
                "consent_history": { "type": "array", "items": schema_ref("ConsentRecord") },
                "events": { "type": "array", "items": object(&["item", "kind", "value", "at"], json!({
                    "item": { "type": "string" }, "kind": { "type": "string" },
                    "value": { "type": "number" }, "at": schema_ref("Timestamp"),
                })) },
            }),
        )),
        ("delete", "/v1/subjects/{id}") => json_of(object(
            &["receipt", "model", "next_retrain"],
            json!({
                "receipt": object(
                    &["erased_at", "consent_records_deleted", "events_deleted", "suppressed", "wal_truncated", "subject_was_known"],
                    json!({
                        "erased_at": schema_ref("Timestamp"),
                        "consent_records_deleted": { "type": "integer", "minimum": 0 },
                        "events_deleted": { "type": "integer", "minimum": 0 },
                        "suppressed": { "type": "boolean" },
                        "wal_truncated": { "type": "boolean" },
                        "subject_was_known": { "type": "boolean" },
                    }),
                ),
                "model": { "type": "string" },
                "next_retrain": { "type": "string" },
            }),
        )),
        ("post", "/v1/events") => json_of(object(
            &["received", "duplicates"],
            json!({
                "received": { "type": "integer", "minimum": 0 },
                "duplicates": { "type": "integer", "minimum": 0, "description": "Events repeating an earlier one of this request; repeats of stored events are dropped too, but not counted here (that would tell whose events were stored)" },
            }),
        )),
        ("post", "/v1/admin/model/reload") => json_of(object(
            &["model_id", "swapped"],
            json!({ "model_id": { "type": "string" }, "swapped": { "const": true } }),
        )),
        _ => json_of(json!({})),
    };
    json!({ "description": "Success", "content": content })
}

fn operation(route: &RouteDoc) -> Value {
    let mut responses = Map::new();
    responses.insert("200".into(), success(route));
    let subject_route = route.path.starts_with("/v1/subjects/");
    if subject_route && route.method != "put" {
        responses.insert(
            "404".into(),
            error_response("not_found (nothing is held about the subject) or, for DELETE, unknown_subject"),
        );
    }
    if route.path == "/v1/items/{id}/similar" {
        responses.insert("404".into(), error_response("unknown_item"));
    }
    if route.path == "/v1/admin/model/reload" {
        responses.insert("422".into(), error_response("model_refused: the old model keeps serving"));
    }
    responses.insert("500".into(), error_response("internal (details go to the operator's log)"));
    if let Some(scope) = route.scope {
        responses.insert("401".into(), error_response("missing_api_key or invalid_api_key"));
        responses
            .insert("403".into(), error_response(&format!("insufficient_scope (needs `{scope}`) or consent_required")));
    }
    responses.insert(
        "400".into(),
        error_response("invalid request: invalid_json, invalid_field, invalid_k, invalid_category, invalid_event"),
    );
    responses.insert("503".into(), error_response("timeout"));
    let mut parameters = Vec::new();
    if route.path.contains("{id}") {
        parameters.push(json!({
            "name": "id", "in": "path", "required": true,
            "description": "The subject's external id; pseudonymized on arrival, never stored or logged",
            "schema": { "type": "string" },
        }));
    }
    if route.path.ends_with("recommendations") || route.path.ends_with("popular") {
        parameters.push(json!({ "name": "k", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100, "default": 10 } }));
        parameters.push(json!({ "name": "exclude", "in": "query", "description": "Comma-separated item ids", "schema": { "type": "string" } }));
        parameters.push(json!({
            "name": "category", "in": "query",
            "description": "Comma-separated categories of the store's catalogue: only items in one of them are listed (a category no item has matches nothing). Each name 1 to 128 bytes, no control characters or commas; otherwise 400 invalid_category",
            "schema": { "type": "string" },
        }));
        parameters.push(json!({
            "name": "exclude_categories", "in": "query",
            "description": "Comma-separated categories of the store's catalogue whose items are never listed; same form as `category`",
            "schema": { "type": "string" },
        }));
    }
    if route.path.ends_with("recommendations") {
        parameters.push(json!({ "name": "Sec-GPC", "in": "header", "description": "1: object to personalization for this request", "schema": { "type": "string" } }));
    }
    if route.path.ends_with("recommendations") || route.path.ends_with("popular") || route.path.ends_with("similar") {
        responses.insert(
            "200".into(),
            json!({
                "description": "Success: each listed item carries its `title` and `category` from the store's catalogue (null when it has none)",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ItemList" } } },
            }),
        );
    }
    let mut op = json!({
        "summary": route.summary,
        "operationId": format!("{}_{}", route.method, route.path.trim_matches('/').replace(['/', '{', '}', '.'], "_")),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(scope) = route.scope {
        op["security"] = json!([{ "apiKey": [] }, { "bearer": [] }]);
        op["x-hush-scope"] = json!(scope);
    }
    let body = match (route.method, route.path) {
        ("put", p) if p.ends_with("/consent") => Some("ConsentChange"),
        ("post", "/v1/events") => Some("EventBatch"),
        _ => None,
    };
    if let Some(schema) = body {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } },
        });
        op["responses"]["413"] = error_response("body_too_large");
    }
    op
}

/// The document for `routes`.
pub(crate) fn document(routes: &[RouteDoc]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let entry = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "hush",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Consent-gated recommendations: nobody is scored without personalization consent.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "Authorization: Bearer hush_..." },
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "additionalProperties": false,
                    "properties": {
                        "error": { "type": "string", "description": "Stable machine-readable code" },
                        "message": { "type": "string" },
                        "purpose": { "type": "string", "description": "consent_required: the purpose needed" },
                        "reason": { "type": "string", "description": "consent_required: not_granted, withdrawn or sec_gpc" },
                        "scope": { "type": "string", "description": "insufficient_scope: the scope needed" },
                    },
                },
                "Timestamp": { "type": "string", "description": "RFC 3339, UTC" },
                "ConsentRecord": {
                    "type": "object",
                    "required": ["seq", "purpose", "granted", "effective_at", "recorded_at", "source", "notice_version", "proof_ref"],
                    "additionalProperties": false,
                    "properties": {
                        "seq": { "type": "integer" },
                        "purpose": { "enum": ["personalization", "training"] },
                        "granted": { "type": "boolean" },
                        "effective_at": { "$ref": "#/components/schemas/Timestamp" },
                        "recorded_at": { "$ref": "#/components/schemas/Timestamp" },
                        "source": { "enum": ["api", "cli", "import"] },
                        "notice_version": { "type": "string" },
                        "proof_ref": { "type": ["string", "null"] },
                    },
                },
                "ConsentStatus": {
                    "type": "object",
                    "required": ["purpose", "state", "as_of", "decided_by"],
                    "additionalProperties": false,
                    "properties": {
                        "purpose": { "enum": ["personalization", "training"] },
                        "state": { "enum": ["granted", "withdrawn", "no_record"] },
                        "as_of": { "$ref": "#/components/schemas/Timestamp" },
                        "decided_by": { "oneOf": [{ "$ref": "#/components/schemas/ConsentRecord" }, { "type": "null" }] },
                    },
                },
                "ItemList": {
                    "type": "object",
                    "required": ["items", "model_id"],
                    "properties": {
                        "model_id": { "type": "string" },
                        "personalized": { "type": "boolean" },
                        "items": { "type": "array", "items": {
                            "type": "object",
                            "required": ["item", "title", "category"],
                            "properties": {
                                "item": { "type": "string" },
                                "title": { "type": ["string", "null"] },
                                "category": { "type": ["string", "null"] },
                                "score": { "type": "number" },
                                "similarity": { "type": "number" },
                                "because": { "type": "array", "items": {
                                    "type": "object",
                                    "properties": {
                                        "item": { "type": "string" },
                                        "title": { "type": ["string", "null"] },
                                        "kind": { "type": "string" },
                                        "text": { "type": "string" },
                                    },
                                } },
                            },
                        } },
                    },
                },
                "ConsentChange": {
                    "type": "object",
                    "required": ["purpose", "granted"],
                    "additionalProperties": false,
                    "properties": {
                        "purpose": { "type": "string", "enum": ["personalization", "training"] },
                        "granted": { "type": "boolean" },
                        "notice_version": { "type": "string", "minLength": 1, "maxLength": 64, "description": "The notice the subject saw: required for a grant (part of the proof of consent); a withdrawal without one is recorded as `none`" },
                        "proof_ref": { "type": "string", "maxLength": 256 },
                        "effective_at": { "type": "string", "description": "RFC 3339 or unix seconds; default now" },
                        "source": { "type": "string", "enum": ["api", "cli", "import"] },
                    },
                },
                "EventBatch": {
                    "type": "object",
                    "required": ["events"],
                    "additionalProperties": false,
                    "properties": { "events": { "type": "array", "items": {
                        "type": "object",
                        "required": ["subject_id", "item_id", "kind"],
                        "additionalProperties": false,
                        "properties": {
                            "event_id": { "type": "string", "minLength": 1, "maxLength": 128, "description": "The source's own id of the event: a retry with the same id stores nothing twice" },
                            "subject_id": { "type": "string" },
                            "item_id": { "type": "string" },
                            "kind": { "type": "string", "description": "view, cart, purchase, rating, or a custom lowercase name" },
                            "value": { "type": "number" },
                            "timestamp": { "type": ["string", "integer"], "description": "RFC 3339 or unix seconds; default now" },
                        },
                    } } },
                },
            },
        },
    })
}
