//! Connecting to RabbitMQ (one attempt over the nodes of `BROKER_URL`, see [`crate::nodes`], or
//! retries with capped exponential backoff between whole rounds, that a shutdown interrupts at
//! any point), and converting AMQP header tables to and from JSON maps (the form the
//! protocol crate and the outbox keep them in).

use std::time::Duration;

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, DefaultConnectionBuilder};
use serde_json::{Map, Number, Value};
use shopfds_config::redact_url;
use shopfds_protocol::MessageProperties;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{BrokerError, BrokerSettings, BrokerState};

/// One connection attempt: each node of `settings.url` once, in the order of
/// `settings.failover` (see [`crate::nodes`]), until one gives a connection. Each node's try is
/// counted in `shopfds_broker_connects_total{outcome}` and bounded by [`NODE_CONNECT_TIMEOUT`];
/// over `amqps://` with the CA and client certificate of `settings.tls`.
pub async fn connect(settings: &BrokerSettings) -> Result<Connection, BrokerError> {
    let nodes = settings.nodes();
    if let [only] = nodes.as_slice() {
        return connect_node(settings, only)
            .await
            .map_err(BrokerError::Amqp);
    }
    let mut failures = Vec::new();
    for index in settings.failover.order(nodes.len()) {
        let Some(node) = nodes.get(index) else {
            continue;
        };
        match connect_node(settings, node).await {
            Ok(conn) => {
                settings.failover.connected(index);
                tracing::info!(
                    node = %redact_url(node),
                    passed_over = failures.len(),
                    "connected to broker node"
                );
                return Ok(conn);
            }
            Err(e) => {
                tracing::warn!(node = %redact_url(node), error = %e, "broker node unreachable; trying the next");
                failures.push(format!("{}: {e}", redact_url(node)));
            }
        }
    }
    Err(BrokerError::NoNode(failures.join("; ")))
}

/// How long one node may take to accept a connection (TCP, TLS, AMQP handshake) before the next
/// node is tried: a node that accepts TCP but never answers must not hold the failover.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

async fn connect_node(settings: &BrokerSettings, url: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(settings.connection_name.clone().into());
    let handshake = async {
        DefaultConnectionBuilder::new()?
            .with_uri_str(url.to_owned())
            .with_properties(props)
            .with_tls_config(settings.tls.lapin_config())
            .connect()
            .await
    };
    let attempt = match tokio::time::timeout(NODE_CONNECT_TIMEOUT, handshake).await {
        Ok(attempt) => attempt,
        Err(_) => Err(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no AMQP handshake within {NODE_CONNECT_TIMEOUT:?}"),
        ))),
    };
    if let Ok(conn) = &attempt {
        crate::stack::check_frame_max(conn.configuration().frame_max());
    }
    let outcome = if attempt.is_ok() { "opened" } else { "failed" };
    shopfds_telemetry::metrics::broker_connects_total()
        .with_label_values(&[outcome])
        .inc();
    attempt
}

/// Capped exponential backoff between attempts at the broker: `reconnect_min`, doubling up to
/// `reconnect_max`. Its owner resets it once an attempt truly succeeded (a worker: once it
/// consumed), so a connection that opens but cannot be used still backs off.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(settings: &BrokerSettings) -> Self {
        let min = settings.reconnect_min.min(settings.reconnect_max);
        Backoff {
            min,
            max: settings.reconnect_max,
            next: min,
        }
    }

    /// Back to `reconnect_min`.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay to wait now: the current step with "equal jitter", a uniformly random wait in
    /// `[step / 2, step]`, so a fleet that lost its broker at once does not come back in
    /// lockstep; the next step is twice as long, never past `reconnect_max`.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_at(rand::random::<f64>())
    }

    /// [`Backoff::next_delay`] with the random draw (in `[0, 1)`) given.
    pub fn next_delay_at(&mut self, draw: f64) -> Duration {
        let step = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        let draw = if draw.is_finite() {
            draw.clamp(0.0, 1.0)
        } else {
            0.0
        };
        step / 2 + (step / 2).mul_f64(draw)
    }

    /// Sleeps for [`Backoff::next_delay`]; `false` when `shutdown` fired first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// The longest delay [`Backoff::wait`] would wait now (at least half of it), for log lines.
    pub fn peek(&self) -> Duration {
        self.next
    }
}

/// Connects, retrying with `backoff` until it succeeds or `shutdown` fires (then `None`); each
/// failure is logged and published to `state` as [`BrokerState::Disconnected`]. The attempt
/// itself is raced against `shutdown`: a broker that accepts TCP but never answers does
/// not hold a stopping service.
pub async fn connect_with_backoff(
    settings: &BrokerSettings,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
    state: &watch::Sender<BrokerState>,
) -> Option<Connection> {
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return None,
            attempt = connect(settings) => attempt,
        };
        match attempt {
            Ok(conn) => return Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = millis(backoff.peek()), "broker unreachable");
                state.send_replace(BrokerState::Disconnected(e.to_string()));
            }
        }
        if !backoff.wait(shutdown).await {
            return None;
        }
    }
}

/// [`connect_with_backoff`] with a fresh [`Backoff`].
pub async fn connect_with_retry(
    settings: &BrokerSettings,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let (state, _) = crate::state::channel();
    connect_with_backoff(settings, shutdown, &mut Backoff::new(settings), &state).await
}

/// Closes `conn` politely, bounded: a broker that stopped answering must not hold up a
/// reconnect or a shutdown.
pub async fn close_quietly(conn: &Connection, reason: &str) {
    if conn.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, reason.into())).await;
    }
}

/// How long [`close_quietly`] waits for the broker's close-ok.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Milliseconds for a log field, saturating instead of truncating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn json_to_table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in map {
        table.insert(ShortString::from(k.as_str()), json_to_amqp(v));
    }
    table
}

pub fn json_to_amqp(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                // py-amqp writes ints that fit in 32 bits as 'I', others as 'l'.
                i32::try_from(i).map_or(AMQPValue::LongLongInt(i), AMQPValue::LongInt)
            } else {
                AMQPValue::Double(n.as_f64().unwrap_or_default())
            }
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(items) => {
            let mut arr = FieldArray::default();
            for item in items {
                arr.push(json_to_amqp(item));
            }
            AMQPValue::FieldArray(arr)
        }
        Value::Object(map) => AMQPValue::FieldTable(json_to_table(map)),
    }
}

/// How deep a header value may nest (an array in an array …) before we stop reading it. Celery's
/// headers nest two or three levels (`timelimit`, `stamps`); a header deeper than this is a
/// reason to dead-letter the message, never a recursion as deep as the sender likes (see
/// [`crate::stack`] for the recursion lapin itself does, which this bound cannot reach).
pub const MAX_HEADER_DEPTH: usize = 64;

/// The text that stands in for a value nested deeper than [`MAX_HEADER_DEPTH`].
pub const TOO_DEEP: &str = "(nested deeper than 64 levels: dropped)";

/// The headers as JSON. A value nested deeper than [`MAX_HEADER_DEPTH`] is replaced by
/// [`TOO_DEEP`], so copies of a message (dead letter, retry) stay shallow; use
/// [`too_deep_header`] to refuse such a message.
pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table_at(table, 0, &mut false)
}

/// The name of the first header nested deeper than [`MAX_HEADER_DEPTH`], if any. Walks the
/// containers only (no conversion, no allocation), at most [`MAX_HEADER_DEPTH`] levels down.
pub fn too_deep_header(table: &FieldTable) -> Option<&str> {
    table
        .inner()
        .iter()
        .find_map(|(k, v)| deeper_than_bound(v, 1).then_some(k.as_str()))
}

/// Whether `value`, `depth` levels down, holds a container past [`MAX_HEADER_DEPTH`].
fn deeper_than_bound(value: &AMQPValue, depth: usize) -> bool {
    match value {
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) if depth > MAX_HEADER_DEPTH => true,
        AMQPValue::FieldArray(a) => a.as_slice().iter().any(|v| deeper_than_bound(v, depth + 1)),
        AMQPValue::FieldTable(t) => t.inner().values().any(|v| deeper_than_bound(v, depth + 1)),
        _ => false,
    }
}

pub fn amqp_to_json(value: &AMQPValue) -> Value {
    value_at(value, 0, &mut false)
}

fn table_at(table: &FieldTable, depth: usize, cut: &mut bool) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), value_at(v, depth + 1, cut)))
        .collect()
}

/// `value`, `depth` levels down; `cut` is set when something deeper was replaced.
fn value_at(value: &AMQPValue, depth: usize, cut: &mut bool) -> Value {
    match value {
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) if depth > MAX_HEADER_DEPTH => {
            *cut = true;
            Value::String(TOO_DEEP.to_owned())
        }
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::Float(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        AMQPValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            let v = f64::from(d.value) / 10f64.powi(i32::from(d.scale));
            Number::from_f64(v).map_or(Value::Null, Value::Number)
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b.as_slice()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(
            a.as_slice()
                .iter()
                .map(|v| value_at(v, depth + 1, cut))
                .collect(),
        ),
        AMQPValue::FieldTable(t) => Value::Object(table_at(t, depth, cut)),
        AMQPValue::Void => Value::Null,
    }
}

/// AMQP properties of a task message, application headers included.
pub fn basic_properties(
    props: &MessageProperties,
    headers: &Map<String, Value>,
) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_content_type(props.content_type.as_str().into())
        .with_content_encoding(props.content_encoding.as_str().into())
        .with_delivery_mode(props.delivery_mode)
        .with_correlation_id(props.correlation_id.as_str().into())
        .with_headers(json_to_table(headers));
    if let Some(priority) = props.priority {
        p = p.with_priority(priority);
    }
    if let Some(reply_to) = props.reply_to.as_deref().filter(|r| !r.is_empty()) {
        p = p.with_reply_to(reply_to.into());
    }
    p
}

/// The reverse of [`basic_properties`], for a message we forward (retry, dead letter, replay).
pub fn message_properties(p: &BasicProperties) -> MessageProperties {
    MessageProperties {
        correlation_id: p
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        content_type: p
            .content_type()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        content_encoding: p
            .content_encoding()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        reply_to: p.reply_to().as_ref().map(|s| s.as_str().to_owned()),
        priority: *p.priority(),
        delivery_mode: p.delivery_mode().unwrap_or(2),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_equal_jitter() {
        let mut settings = BrokerSettings::with_url("amqp://127.0.0.1:1/%2f", "test");
        settings.reconnect_min = Duration::from_millis(200);
        settings.reconnect_max = Duration::from_secs(10);
        let mut backoff = Backoff::new(&settings);
        let steps: Vec<u128> = (0..8)
            .map(|_| backoff.next_delay_at(1.0).as_millis())
            .collect();
        assert_eq!(steps, vec![200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        backoff.reset();
        assert_eq!(backoff.next_delay_at(0.0), Duration::from_millis(100));
        assert_eq!(backoff.next_delay_at(0.5), Duration::from_millis(300));
        assert_eq!(backoff.next_delay_at(f64::NAN), Duration::from_millis(400));
        // 1.6 s, 3.2 s, 6.4 s, then the cap.
        for _ in 0..3 {
            backoff.next_delay();
        }
        for _ in 0..100 {
            let d = backoff.next_delay();
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_secs(10),
                "{d:?}"
            );
        }
    }

    #[test]
    fn headers_survive_a_round_trip_through_an_amqp_table() {
        let headers = json!({
            "task": "send_order_confirmation_email", "retries": 2, "eta": null,
            "timelimit": [300, 240.5], "stamps": {}, "ignore_result": false, "big": 1i64 << 40,
        });
        let map = headers.as_object().cloned().unwrap_or_default();
        let back = table_to_json(&json_to_table(&map));
        assert_eq!(Value::Object(back), headers);
    }

    /// An array nested `depth` levels under header `deep`, built without recursion.
    fn nested(depth: usize) -> FieldTable {
        let mut value = AMQPValue::FieldArray(FieldArray::default());
        for _ in 1..depth {
            let mut outer = FieldArray::default();
            outer.push(value);
            value = AMQPValue::FieldArray(outer);
        }
        let mut table = FieldTable::default();
        table.insert("task".into(), AMQPValue::LongString("t".into()));
        table.insert("deep".into(), value);
        table
    }

    #[test]
    fn a_header_nested_past_the_bound_is_named_and_cut_off() {
        let ok = nested(MAX_HEADER_DEPTH);
        assert_eq!(too_deep_header(&ok), None);
        assert!(
            !serde_json::to_string(&table_to_json(&ok))
                .unwrap()
                .contains(TOO_DEEP)
        );
        let deep = nested(MAX_HEADER_DEPTH + 1);
        assert_eq!(too_deep_header(&deep), Some("deep"));
        let copy = table_to_json(&deep);
        assert_eq!(copy["task"], "t");
        let mut v = &copy["deep"];
        let mut levels = 0;
        while let Some(inner) = v.as_array().and_then(|a| a.first()) {
            v = inner;
            levels += 1;
        }
        assert_eq!(levels, MAX_HEADER_DEPTH);
        assert_eq!(v, TOO_DEEP);
    }
}
