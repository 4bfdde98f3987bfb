//! The load: `N` orders posted at a set rate, each from a customer of its own, each retried with
//! its `Idempotency-Key` (as a careful client does) while order-api answers 5xx or cannot be
//! reached, so an order caught by an outage is either accepted once or reported unanswered.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::rng::Rng;

/// How long one order keeps being retried.
const RETRY_FOR: Duration = Duration::from_secs(120);
const RETRY_PAUSE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub enum Outcome {
    /// 201: the order id, its status and its tasks (`name`, `task id`).
    Accepted {
        order_id: String,
        status: String,
        tasks: Vec<(String, String)>,
    },
    /// A 4xx that retrying cannot change (the order is invalid): a defect of the harness or the API.
    Refused { status: u16, body: String },
    /// No 2xx before the retry window ended.
    Unanswered { last_error: String },
}

#[derive(Debug, Clone)]
pub struct Posted {
    pub index: usize,
    pub outcome: Outcome,
    /// Requests sent for this order (1 when the first was answered).
    pub attempts: u32,
}

/// The customer id prefix of a run: the ledger finds the run's orders by it.
pub fn customer_prefix(run: &str) -> String {
    format!("chaos-{run}-")
}

/// Posts `orders` orders to `api_url` with `api_key` at `rate` per second and returns every
/// outcome, in order.
pub async fn post_orders(
    api_url: &str,
    api_key: &str,
    run: &str,
    orders: usize,
    rate: f64,
    seed: u64,
) -> Vec<Posted> {
    let mut rng = Rng::new(seed ^ 0x0d0e);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut posts = JoinSet::new();
    for index in 0..orders {
        ticks.tick().await;
        let client = client.clone();
        let url = format!("{api_url}/v1/orders");
        let authorization = format!("Bearer {api_key}");
        // One customer in three has a slow mail server (see `order`).
        let slow_ms = (rng.below(3) == 0).then(|| 200 + 100 * rng.below(19));
        let body = order(run, index, slow_ms);
        let key = format!("{}{index}", customer_prefix(run));
        posts.spawn(
            async move { post_one(&client, &url, &authorization, &key, &body, index).await },
        );
    }
    let mut done: Vec<Posted> = posts.join_all().await;
    done.sort_by_key(|p| p.index);
    done
}

async fn post_one(
    client: &reqwest::Client,
    url: &str,
    authorization: &str,
    key: &str,
    body: &Value,
    index: usize,
) -> Posted {
    let deadline = Instant::now() + RETRY_FOR;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last_error = match client
            .post(url)
            .header("authorization", authorization)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => {
                let status = resp.status();
                let outcome = match resp.json::<Value>().await {
                    Ok(answer) => accepted(&answer),
                    Err(e) => Err(format!("{status} with an unreadable body: {e}")),
                };
                match outcome {
                    Ok(outcome) => {
                        return Posted {
                            index,
                            outcome,
                            attempts,
                        };
                    }
                    Err(e) => e,
                }
            }
            // 408 (timeout), 409 (the same key still in progress), 429: worth another try.
            Ok(resp)
                if resp.status().is_client_error()
                    && ![408, 409, 429].contains(&resp.status().as_u16()) =>
            {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                return Posted {
                    index,
                    outcome: Outcome::Refused { status, body },
                    attempts,
                };
            }
            Ok(resp) => format!("HTTP {}", resp.status()),
            Err(e) => format!("{e}"),
        };
        if Instant::now() >= deadline {
            return Posted {
                index,
                outcome: Outcome::Unanswered { last_error },
                attempts,
            };
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

fn accepted(answer: &Value) -> Result<Outcome, String> {
    let order_id = answer["order_id"]
        .as_str()
        .ok_or_else(|| format!("no order_id in {answer}"))?
        .to_owned();
    let tasks = answer["tasks"]
        .as_object()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|(name, id)| Some((name.clone(), id.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Outcome::Accepted {
        order_id,
        status: answer["status"].as_str().unwrap_or_default().to_owned(),
        tasks,
    })
}

/// A small order no fraud rule fires on: a customer, card and client address of its own, an
/// old account, a small amount, billing and shipping in one country. With `slow_ms`, the
/// customer's address is `slow<ms>.…`, which the SMTP sink answers that much later (a slow
/// mail server: the email task is still waiting for it when a fault strikes).
pub fn order(run: &str, index: usize, slow_ms: Option<usize>) -> Value {
    let customer = format!("{}{index}", customer_prefix(run));
    let mailbox = match slow_ms {
        Some(ms) => format!("slow{ms}.chaos.{run}.{index}@example.com"),
        None => format!("chaos.{run}.{index}@example.com"),
    };
    json!({
        "customer": {
            "id": customer,
            "email": mailbox,
            "name": format!("Chaos Customer {index}"),
            "account_created_at": "2020-01-01T00:00:00Z"
        },
        "items": [{"sku": "CHAOS-1", "name": "Test item", "quantity": 1, "unit_price": 1500}],
        "currency": "USD",
        "shipping_address": {
            "name": format!("Chaos Customer {index}"), "line1": "1 Main St", "city": "Springfield",
            "postal_code": "12345", "country": "US"
        },
        "billing_country": "US",
        "payment": {"method": "card", "card_fingerprint": format!("fp_{run}_{index}")},
        // 198.18.0.0/15 is for benchmarks (RFC 2544): 131,072 addresses, one per order.
        "client_ip": format!("198.{}.{}.{}", 18 + ((index >> 16) & 1), (index >> 8) & 0xff, index & 0xff),
    })
}
