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

fn operation(route: &RouteDoc) -> Value {
    let mut responses = Map::new();
    responses.insert("200".into(), json!({ "description": "Success", "content": { "application/json": {} } }));
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
                    "properties": { "error": { "type": "string" }, "message": { "type": "string" } },
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
                    "required": ["purpose", "granted", "notice_version"],
                    "additionalProperties": false,
                    "properties": {
                        "purpose": { "type": "string", "enum": ["personalization", "training"] },
                        "granted": { "type": "boolean" },
                        "notice_version": { "type": "string", "minLength": 1, "maxLength": 64 },
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
                            "subject_id": { "type": "string" },
                            "item_id": { "type": "string" },
                            "kind": { "type": "string", "description": "view, cart, purchase, rating, or a custom lowercase name" },
                            "value": { "type": "number" },
                            "timestamp": { "type": "string", "description": "RFC 3339 or unix seconds; default now" },
                        },
                    } } },
                },
            },
        },
    })
}
