//! `POST /v1/orders` and `GET /v1/orders/{id}`.
//!
//! An order and the messages of its tasks are written in one transaction (the transactional
//! outbox); the relay publishes them afterwards. A broker outage therefore delays the tasks and
//! never fails or loses an order.
//!
//! What the caller sees of the fraud check: the order's `status` (`accepted`, `review`,
//! `blocked`) always; the `fds` object (score, decision, rule reasons and their limits) only
//! with scope `admin` ([`shown_to`]). The stored order and the stored idempotent answer keep
//! everything; a replay is filtered for the key that asks.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use shopfds_auth::{Principal, Scope};
use shopfds_store::{
    CreateOutcome, IdempotencyRequest, NewOrder, NewOrderItem, OrderRecord, OutboxMessage,
    PendingTask, StoredResponse,
};
use uuid::Uuid;

use crate::domain::ValidOrder;
use crate::domain::plan::{self, Decided};
use crate::error::ApiError;
use crate::startup::AppState;

const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY: usize = 255;

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let order = ValidOrder::parse(&body, &state.limits)?;
    let idempotency = idempotency(&caller, &headers, &body)?;
    let client_ip = crate::auth::client_ip(
        &caller,
        order.client_ip,
        peer.ip(),
        &headers,
        &state.trusted_proxies,
    );

    // A replay is answered before the order is scored again.
    if let Some(idem) = &idempotency
        && let Some(outcome) = state.store.idempotency().outcome(idem).await?
    {
        return answer(&caller, outcome, None);
    }

    let order_id = Uuid::new_v4();
    let verdict = state
        .fds
        .score(&order_id.to_string(), &order, client_ip)
        .await;
    let status = verdict.order_status();
    let fds = verdict.json;

    // The order's tasks (domain::plan): the scenario's canvas, after an evaluation when the
    // score came from the fallback, nothing when blocked. Each message is a Celery message, the
    // way a Python producer would send it; every task gets its PENDING row.
    let decided = if verdict.fallback {
        Decided::Fallback
    } else if status == "blocked" {
        Decided::Blocked
    } else {
        Decided::Accepted
    };
    let plan = plan::plan(order_id, decided)
        .map_err(|e| ApiError::Internal(format!("the order's canvas: {}", e.message)))?;
    let outbox: Vec<OutboxMessage> = plan
        .messages
        .iter()
        .map(|p| OutboxMessage::task(&p.message, &p.queue))
        .collect();
    let mut pending = Vec::with_capacity(plan.tasks.len());
    let mut task_ids = Map::new();
    for task in &plan.tasks {
        pending.push(PendingTask {
            task_id: task.id.clone(),
            name: task.name.clone(),
            queue: task.queue.clone(),
        });
        task_ids.insert(task.name.clone(), Value::String(task.id.clone()));
    }

    let req = &order.request;
    let response = json!({
        "order_id": order_id,
        "status": status,
        "total": order.total,
        "currency": req.currency.as_str(),
        "fds": fds,
        "tasks": task_ids,
    });
    let new_order = NewOrder {
        id: order_id,
        customer_id: req.customer.id.as_str().to_owned(),
        customer_email: req.customer.email.as_str().to_owned(),
        customer_name: req.customer.name.as_str().to_owned(),
        account_created_at: req.customer.account_created_at,
        currency: req.currency.as_str().to_owned(),
        total: order.total,
        items: req
            .items
            .iter()
            .map(|i| NewOrderItem {
                sku: i.sku.as_str().to_owned(),
                name: i.name.as_str().to_owned(),
                // Validated to 1..=10 000 by ValidOrder.
                quantity: i32::try_from(i.quantity).unwrap_or(i32::MAX),
                unit_price: i.unit_price,
            })
            .collect(),
        shipping_address: serde_json::to_value(&req.shipping_address).unwrap_or(Value::Null),
        billing_country: req.billing_country.as_str().to_owned(),
        payment: serde_json::to_value(&req.payment).unwrap_or(Value::Null),
        client_ip: Some(client_ip.to_string()),
        status: status.to_owned(),
        fds,
        tasks: Value::Object(task_ids),
    };
    let stored = StoredResponse {
        status: StatusCode::CREATED.as_u16(),
        body: response,
    };
    let outcome = state
        .store
        .orders()
        .create(idempotency.as_ref(), &new_order, &outbox, &pending, &stored)
        .await?;
    if let CreateOutcome::Created = outcome {
        tracing::info!(%order_id, total = order.total, currency = req.currency.as_str(), status, key_id = %caller.key_id, "order accepted");
    }
    answer(&caller, outcome, Some(stored))
}

/// An order answer as `caller` may see it: without the `fds` object (score, decision, rule
/// reasons and limits) unless the key has `admin`.
pub fn shown_to(caller: &Principal, mut body: Value) -> Value {
    if !caller.allows(Scope::Admin)
        && let Some(fields) = body.as_object_mut()
    {
        fields.remove("fds");
    }
    body
}

/// The HTTP answer to an order: the new order, the first answer for a replayed key, or 409.
fn answer(
    caller: &Principal,
    outcome: CreateOutcome,
    created: Option<StoredResponse>,
) -> Result<Response, ApiError> {
    match (outcome, created) {
        (CreateOutcome::Created, Some(stored)) => {
            Ok((StatusCode::CREATED, Json(shown_to(caller, stored.body))).into_response())
        }
        (CreateOutcome::Replayed(first), _) => {
            let status = StatusCode::from_u16(first.status).unwrap_or(StatusCode::CREATED);
            let mut response = (status, Json(shown_to(caller, first.body))).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
        (CreateOutcome::KeyConflict, _) => Err(ApiError::IdempotencyConflict),
        (CreateOutcome::Created, None) => {
            Err(ApiError::Internal("created without a response".to_owned()))
        }
    }
}

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let order = order(&state, id).await?;
    Ok(Json(shown_to(&caller, order_json(&order))))
}

/// `GET /v1/orders/{id}/invoice`: the invoice PDF once `generate_invoice_pdf` has written it.
pub async fn invoice(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let order = order(&state, id).await?;
    let path = order
        .invoice_url
        .as_deref()
        .ok_or_else(|| ApiError::NotFound(format!("order {} has no invoice yet", order.id)))?;
    let bytes = super::document(&state, path).await?;
    Ok(super::pdf_response(
        bytes,
        &format!("invoice-{}.pdf", order.id),
    ))
}

/// The order the path names; 404 for an unknown or malformed id.
async fn order(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
) -> Result<OrderRecord, ApiError> {
    // A path that is not UTF-8 (`%FF`) is no order id either.
    let id = id.map(|Path(id)| id).unwrap_or_default();
    let not_found = || ApiError::NotFound(format!("no order with id {:?}", super::shown(&id)));
    let order_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    state
        .store
        .orders()
        .get(order_id)
        .await?
        .ok_or_else(not_found)
}

fn order_json(o: &OrderRecord) -> Value {
    json!({
        "order_id": o.id,
        "status": o.status,
        "customer": {"id": o.customer_id, "email": o.customer_email, "name": o.customer_name, "account_created_at": o.account_created_at},
        "items": o.items.iter().map(|i| json!({"sku": i.sku, "name": i.name, "quantity": i.quantity, "unit_price": i.unit_price})).collect::<Vec<_>>(),
        "total": o.total,
        "currency": o.currency,
        "shipping_address": o.shipping_address,
        "billing_country": o.billing_country,
        "client_ip": o.client_ip,
        "fds": o.fds,
        "tasks": o.tasks,
        "tracking_number": o.tracking_number,
        // The stored object's path stays inside; the caller gets the download's address.
        "invoice_url": o.invoice_url.as_ref().map(|_| format!("/v1/orders/{}/invoice", o.id)),
        "created_at": o.created_at,
        "updated_at": o.updated_at,
    })
}

/// The body must be declared JSON: `application/json` or `application/<anything>+json`, with
/// any parameters (`; charset=utf-8`). Missing or anything else is `415`.
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let json = essence.as_deref().is_some_and(|mime| {
        mime == "application/json"
            || mime
                .strip_prefix("application/")
                .is_some_and(|subtype| subtype.ends_with("+json"))
    });
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// The request's `Idempotency-Key`, scoped to the caller's API key: another key using the same
/// value makes its own order and cannot replay or block this caller's.
fn idempotency(
    caller: &Principal,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<IdempotencyRequest>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::validation("Idempotency-Key", "must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::validation(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
        ));
    }
    let digest = Sha256::digest(body);
    let request_hash = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(IdempotencyRequest {
        scope: caller.key_id.clone(),
        key: key.to_owned(),
        request_hash,
    }))
}
