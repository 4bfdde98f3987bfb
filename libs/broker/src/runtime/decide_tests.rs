//! One test per row of the decision table in `decide.rs`: what becomes of a message, without a
//! broker or a database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use shopfds_protocol::{Signature, TaskMessage, TaskState};
use shopfds_telemetry::metrics::outcome as label;

use super::decide::{Action, ChordStep, Disposition, Facts, Outcome, decide, triage};
use super::options::{Hook, RetryPolicy, TaskError, TaskFailure, TaskOptions};

const QUEUE: &str = "email";
const HORIZON: Duration = Duration::from_secs(30 * 24 * 3600);

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap()
}

fn message() -> TaskMessage {
    let mut kwargs = Map::new();
    kwargs.insert("order_id".to_owned(), json!("o-1"));
    TaskMessage::new("send_order_confirmation_email", kwargs)
}

/// The email task's options: 3 retries, exponential backoff from 1 s with full jitter.
fn email_options() -> TaskOptions {
    TaskOptions {
        max_retries: 3,
        retry: RetryPolicy::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            jitter: true,
        },
        ..TaskOptions::default()
    }
}

fn facts<'a>(msg: &'a TaskMessage, options: Option<&'a TaskOptions>) -> Facts<'a> {
    Facts {
        queue: QUEUE,
        message: Some(msg),
        options,
        now: now(),
        result_expires: Duration::from_secs(3600),
        jitter: 0.5,
    }
}

fn recorded(d: &Disposition) -> Option<(TaskState, Option<Value>, Option<String>)> {
    d.record.as_ref().map(|r| {
        (
            r.state,
            r.result.clone(),
            r.error
                .as_ref()
                .and_then(|e| e["exc_type"].as_str())
                .map(str::to_owned),
        )
    })
}

#[test]
fn an_undecodable_message_is_dead_lettered_and_rejected_under_its_id() {
    let msg = message();
    let f = Facts {
        message: None,
        options: None,
        ..facts(&msg, None)
    };
    let d = decide(
        &f,
        Outcome::Undecodable {
            reason: "content type application/x-python-serialize refused".to_owned(),
            task_id: Some("t-1".to_owned()),
            task: Some("send_order_confirmation_email".to_owned()),
        },
    );
    assert_eq!(
        d.action,
        Action::DeadLetter {
            reason: "content type application/x-python-serialize refused".to_owned()
        }
    );
    let record = d.record.as_ref().unwrap();
    assert_eq!(
        (record.task_id.as_str(), record.state),
        ("t-1", TaskState::Rejected)
    );
    assert_eq!(d.counted_as, Some(label::REJECTED));

    let without_id = decide(
        &f,
        Outcome::Undecodable {
            reason: "bad JSON".to_owned(),
            task_id: None,
            task: None,
        },
    );
    assert!(without_id.record.is_none(), "no id, nothing to record");
    assert!(matches!(without_id.action, Action::DeadLetter { .. }));
}

#[test]
fn an_unknown_task_is_dead_lettered_with_its_name_and_rejected() {
    let msg = TaskMessage::new("no_such_task", Map::new());
    assert_eq!(
        triage(&msg, false, |_| Ok(()), now(), HORIZON),
        Some(Outcome::UnknownTask)
    );
    let d = decide(&facts(&msg, None), Outcome::UnknownTask);
    let Action::DeadLetter { reason } = &d.action else {
        panic!("{:?}", d.action)
    };
    assert!(reason.contains("\"no_such_task\""), "{reason}");
    assert_eq!(
        recorded(&d),
        Some((TaskState::Rejected, None, Some("NotRegistered".to_owned())))
    );
}

#[test]
fn an_expired_message_is_revoked_without_running() {
    let mut msg = message();
    msg.headers.expires = Some(now() - chrono::Duration::seconds(1));
    let outcome = triage(&msg, true, |_| Ok(()), now(), HORIZON).unwrap();
    assert!(matches!(outcome, Outcome::Expired { .. }));
    let options = email_options();
    let d = decide(&facts(&msg, Some(&options)), outcome);
    assert!(matches!(d.action, Action::Revoke { .. }));
    assert_eq!(
        recorded(&d),
        Some((
            TaskState::Revoked,
            None,
            Some("TaskRevokedError".to_owned())
        ))
    );
    assert_eq!(d.counted_as, Some(label::REVOKED));
}

#[test]
fn an_eta_past_the_horizon_is_refused_to_the_dead_letter_queue() {
    let mut msg = message();
    msg.headers.eta = Some(now() + chrono::Duration::days(30) + chrono::Duration::seconds(1));
    let outcome = triage(&msg, true, |_| Ok(()), now(), HORIZON).unwrap();
    assert!(
        matches!(outcome, Outcome::EtaBeyondHorizon { .. }),
        "{outcome:?}"
    );
    let d = decide(&facts(&msg, Some(&email_options())), outcome);
    let Action::DeadLetter { reason } = &d.action else {
        panic!("{:?}", d.action)
    };
    assert!(reason.contains("WORKER_ETA_HORIZON_SECS"), "{reason}");
    assert_eq!(
        recorded(&d),
        Some((
            TaskState::Rejected,
            None,
            Some("EtaBeyondHorizon".to_owned())
        ))
    );
    assert_eq!(d.counted_as, Some(label::REJECTED));

    msg.headers.eta = Some(now() + chrono::Duration::days(30));
    let outcome = triage(&msg, true, |_| Ok(()), now(), HORIZON).unwrap();
    assert!(
        matches!(outcome, Outcome::EtaInFuture { .. }),
        "at the horizon: deferred"
    );
}

#[test]
fn an_eta_more_than_a_second_ahead_is_deferred_through_the_delay_tree() {
    let mut msg = message();
    msg.headers.eta = Some(now() + chrono::Duration::milliseconds(2500));
    let outcome = triage(&msg, true, |_| Ok(()), now(), HORIZON).unwrap();
    let d = decide(&facts(&msg, Some(&email_options())), outcome);
    assert_eq!(d.action, Action::DeferToEta { delay_secs: 3 });
    assert!(d.record.is_none());

    msg.headers.eta = Some(now() + chrono::Duration::milliseconds(900));
    assert_eq!(
        triage(&msg, true, |_| Ok(()), now(), HORIZON),
        None,
        "within a second: runs now"
    );
}

#[test]
fn a_chord_the_backend_cannot_complete_is_refused_on_arrival() {
    let mut msg = message();
    msg.headers.group = Some("g-1".to_owned());
    msg.embed.chord = Some(Signature::new("tally", Map::new()));
    let outcome = triage(
        &msg,
        true,
        |_| Err("no chord_size".to_owned()),
        now(),
        HORIZON,
    )
    .unwrap();
    assert_eq!(
        outcome,
        Outcome::ChordUnsupported {
            reason: "no chord_size".to_owned()
        }
    );
    let d = decide(&facts(&msg, Some(&email_options())), outcome);
    assert_eq!(
        d.action,
        Action::DeadLetter {
            reason: "no chord_size".to_owned()
        }
    );
    assert_eq!(recorded(&d).map(|r| r.0), Some(TaskState::Failure));

    // The check is asked only of chord parts.
    let plain = message();
    assert_eq!(
        triage(
            &plain,
            true,
            |_| Err("never asked".to_owned()),
            now(),
            HORIZON
        ),
        None
    );
}

#[test]
fn success_records_the_result_publishes_the_chain_and_callbacks_and_acks() {
    let mut msg = message();
    let next = Signature::new("send_invoice_email", Map::new()).with_option("task_id", "t-next");
    msg.embed.chain = Some(vec![next]);
    msg.embed.callbacks = Some(vec![Signature::new("audit", Map::new())]);
    let d = decide(
        &facts(&msg, Some(&email_options())),
        Outcome::Succeeded(json!({"sent": true})),
    );
    assert_eq!(d.action, Action::Ack);
    assert_eq!(
        recorded(&d),
        Some((TaskState::Success, Some(json!({"sent": true})), None))
    );
    let tasks: Vec<(&str, &str)> = d
        .follow_ups
        .iter()
        .map(|p| (p.message.task(), p.queue.as_str()))
        .collect();
    assert_eq!(
        tasks,
        vec![("send_invoice_email", "email"), ("audit", "default")]
    );
    let next = &d.follow_ups[0].message;
    assert_eq!(next.id(), "t-next");
    assert_eq!(
        next.args,
        vec![json!({"sent": true})],
        "the result comes first"
    );
    assert_eq!(next.headers.parent_id.as_deref(), Some(msg.id()));
    assert!(d.chord.is_none());
    assert_eq!(d.counted_as, Some(label::SUCCEEDED));
}

#[test]
fn a_chord_part_that_succeeds_is_counted_with_its_result() {
    let mut msg = message();
    msg.headers.group = Some("g-1".to_owned());
    msg.embed.chord = Some(Signature::new("tally", Map::new()));
    let d = decide(
        &facts(&msg, Some(&email_options())),
        Outcome::Succeeded(json!(7)),
    );
    assert_eq!(d.chord, Some(ChordStep::PartSucceeded { result: json!(7) }));
}

/// What happens when SMTP answers 451: the handler returns a transient error; with retries left
/// the message is copied through the delay tree with `retries + 1` after the policy's wait.
#[test]
fn a_transient_error_with_retries_left_is_retried_after_the_policys_wait() {
    let retried = Arc::new(Mutex::new(Vec::<TaskFailure>::new()));
    let seen = retried.clone();
    let options = TaskOptions {
        on_retry: Some(Hook::new(move |f| seen.lock().unwrap().push(f.clone()))),
        ..email_options()
    };
    let mut msg = message();
    msg.headers.retries = 2;
    let d = decide(
        &facts(&msg, Some(&options)),
        Outcome::Failed(TaskError::transient("SMTP 451 try again later")),
    );
    // 1 s × 2² = 4 s, full jitter with a draw of 0.5: 2 s.
    assert_eq!(
        d.action,
        Action::Retry {
            delay_secs: 2,
            retries: 3,
            eta: now() + chrono::Duration::seconds(2),
        }
    );
    assert_eq!(
        recorded(&d),
        Some((TaskState::Retry, None, Some("TransientError".to_owned())))
    );
    let hook = d.hook.as_ref().unwrap();
    assert_eq!(hook.which, "on_retry");
    assert_eq!(hook.event.retry_in, Some(Duration::from_secs(2)));
    assert!(d.follow_ups.is_empty(), "no errbacks on a retry");
    assert_eq!(d.counted_as, Some(label::RETRIED));
}

#[test]
fn a_countdown_overrides_the_policy_and_sub_second_waits_round_up_to_one_second() {
    let msg = message();
    let options = email_options();
    let with = |countdown| {
        decide(
            &facts(&msg, Some(&options)),
            Outcome::Failed(TaskError::Transient {
                message: "partner 503".to_owned(),
                countdown: Some(countdown),
            }),
        )
        .action
    };
    assert!(matches!(
        with(Duration::from_secs(30)),
        Action::Retry { delay_secs: 30, .. }
    ));
    assert!(matches!(
        with(Duration::from_millis(200)),
        Action::Retry { delay_secs: 1, .. }
    ));
    assert!(matches!(
        with(Duration::from_millis(1200)),
        Action::Retry { delay_secs: 2, .. }
    ));
}

#[test]
fn a_transient_error_with_retries_spent_fails_for_good() {
    let mut msg = message();
    msg.headers.retries = 3;
    msg.embed.errbacks = Some(vec![Signature::new("notify_ops", Map::new())]);
    let d = decide(
        &facts(&msg, Some(&email_options())),
        Outcome::Failed(TaskError::transient("SMTP 451 try again later")),
    );
    assert_eq!(
        d.action,
        Action::DeadLetter {
            reason: "max retries (3) exceeded: SMTP 451 try again later".to_owned()
        }
    );
    assert_eq!(recorded(&d).map(|r| r.0), Some(TaskState::Failure));
    assert_eq!(d.follow_ups.len(), 1);
    assert_eq!(
        d.follow_ups[0].message.args,
        vec![json!(msg.id())],
        "errbacks get the id"
    );
    assert_eq!(d.counted_as, Some(label::FAILED));
}

#[test]
fn a_permanent_error_fails_at_once_calls_on_failure_and_fails_its_chord() {
    let failed = Arc::new(Mutex::new(Vec::<TaskFailure>::new()));
    let seen = failed.clone();
    let options = TaskOptions {
        on_failure: Some(Hook::new(move |f| seen.lock().unwrap().push(f.clone()))),
        ..email_options()
    };
    let mut msg = message();
    msg.headers.group = Some("g-1".to_owned());
    let errback = Signature::new("chord_failed", Map::new());
    msg.embed.chord = Some(
        Signature::new("tally", Map::new())
            .with_option("task_id", "body-1")
            .with_option("link_error", serde_json::to_value(vec![errback]).unwrap()),
    );
    let d = decide(
        &facts(&msg, Some(&options)),
        Outcome::Failed(TaskError::permanent("SMTP 550 no such user")),
    );
    assert_eq!(
        d.action,
        Action::DeadLetter {
            reason: "SMTP 550 no such user".to_owned()
        }
    );
    assert_eq!(
        recorded(&d),
        Some((TaskState::Failure, None, Some("PermanentError".to_owned())))
    );
    let Some(ChordStep::PartFailed { body, .. }) = &d.chord else {
        panic!("{:?}", d.chord)
    };
    assert_eq!(body.body_id.as_deref(), Some("body-1"));
    assert_eq!(
        body.reason,
        format!("Dependency {} raised SMTP 550 no such user", msg.id())
    );
    assert_eq!(body.errbacks.len(), 1);
    assert_eq!(body.errbacks[0].message.args, vec![json!("body-1")]);
    let hook = d.hook.as_ref().unwrap();
    assert_eq!(hook.which, "on_failure");
    assert_eq!(hook.event.reason, "SMTP 550 no such user");
}

#[test]
fn the_hard_time_limit_fails_the_task_with_time_limit_exceeded() {
    let msg = message();
    let d = decide(
        &facts(&msg, Some(&email_options())),
        Outcome::HardTimeLimit {
            limit: Duration::from_secs(300),
        },
    );
    let Action::DeadLetter { reason } = &d.action else {
        panic!("{:?}", d.action)
    };
    assert!(reason.starts_with("TimeLimitExceeded"), "{reason}");
    assert_eq!(recorded(&d).map(|r| r.0), Some(TaskState::Failure));
}

#[test]
fn a_task_abandoned_at_shutdown_is_requeued_and_nothing_is_recorded() {
    let msg = message();
    let d = decide(&facts(&msg, Some(&email_options())), Outcome::Abandoned);
    assert_eq!(d.action, Action::Requeue);
    assert!(d.record.is_none() && d.follow_ups.is_empty() && d.hook.is_none());
    assert_eq!(d.counted_as, None);
}

#[test]
fn ignore_result_records_nothing_but_failures_still_reach_the_dead_letter_queue() {
    let options = TaskOptions {
        ignore_result: true,
        ..email_options()
    };
    let msg = message();
    let ok = decide(&facts(&msg, Some(&options)), Outcome::Succeeded(json!(1)));
    assert!(ok.record.is_none());
    assert_eq!(ok.action, Action::Ack);
    let failed = decide(
        &facts(&msg, Some(&options)),
        Outcome::Failed(TaskError::permanent("bad")),
    );
    assert!(failed.record.is_none());
    assert!(matches!(failed.action, Action::DeadLetter { .. }));

    // The message's own `ignore_result` header has the same effect.
    let mut quiet = message();
    quiet.headers.ignore_result = true;
    let d = decide(
        &facts(&quiet, Some(&email_options())),
        Outcome::Succeeded(json!(1)),
    );
    assert!(d.record.is_none());
}

#[test]
fn results_expire_after_the_configured_time() {
    let msg = message();
    let d = decide(
        &facts(&msg, Some(&email_options())),
        Outcome::Succeeded(json!(1)),
    );
    assert_eq!(
        d.record.unwrap().expires_at,
        Some(now() + chrono::Duration::hours(1))
    );
}

#[test]
fn a_dependency_outage_holds_the_message_and_spends_no_retry() {
    // Even with every retry spent: the outage is not the task's failure.
    let mut msg = message();
    msg.headers.retries = 3;
    msg.embed.errbacks = Some(vec![Signature::new("notify_ops", Map::new())]);
    let d = decide(
        &facts(&msg, Some(&email_options())),
        Outcome::Failed(TaskError::unavailable(
            "database",
            "database unavailable: pool timed out while waiting for an open connection",
        )),
    );
    assert_eq!(
        d.action,
        Action::AwaitDependency {
            dependency: "database".to_owned(),
            reason: "database unavailable: pool timed out while waiting for an open connection"
                .to_owned(),
        }
    );
    assert!(d.record.is_none() && d.follow_ups.is_empty() && d.hook.is_none() && d.chord.is_none());
    assert_eq!(d.counted_as, None);
}

#[test]
fn a_dependency_error_is_unavailable_only_when_unreachable() {
    assert!(matches!(
        TaskError::from_dependency("database", true, "connection refused"),
        TaskError::Unavailable { .. }
    ));
    let answered = TaskError::from_dependency("database", false, "deadlock detected");
    assert!(
        matches!(answered, TaskError::Transient { .. }),
        "{answered:?}"
    );
}

#[test]
fn a_countdown_beyond_the_calendar_does_not_overflow() {
    let msg = message();
    let d = decide(
        &facts(&msg, Some(&email_options())),
        Outcome::Failed(TaskError::Transient {
            message: "come back much later".to_owned(),
            countdown: Some(Duration::MAX),
        }),
    );
    let Action::Retry {
        delay_secs, eta, ..
    } = d.action
    else {
        panic!("{:?}", d.action)
    };
    assert_eq!(delay_secs, u64::MAX);
    assert_eq!(eta, chrono::DateTime::<chrono::Utc>::MAX_UTC);
}
