//! The stack of the thread that reads AMQP frames, sized so that no header the broker accepts
//! can overflow it.
//!
//! lapin reads every frame on a thread of its own (`lapin-io-loop`) and parses header tables
//! recursively: a header holding an array nested N levels deep costs N nested parser calls,
//! and dropping it later costs N nested drops. An array level is 5 bytes on the wire, so a
//! header of under 1 KB nested 173 levels deep (1,218 in a release build) overflowed the
//! standard 2 MiB stack lapin's thread gets, and the process aborted (and again after every
//! restart, on the same message).
//!
//! What bounds the depth is the broker's own `frame_max` (RabbitMQ: 131072 bytes unless the
//! operator changed it): RabbitMQ refuses a frame larger than that from the publisher, and a
//! message's header must fit in one frame. The `frame_max` a consumer negotiates bounds nothing:
//! RabbitMQ forwards a header frame as large as its own limit to a connection that asked for
//! less (checked on RabbitMQ 3.10; lapin then closes the connection with a FRAME_ERROR, and the
//! message comes back for ever), so our connections ask for no lower `frame_max`.
//!
//! The thread's stack is the standard library's default, which it takes from `RUST_MIN_STACK`
//! when the process spawns its first thread (the workspace forbids `unsafe`, so the variable
//! cannot be set from inside the process). So every binary calls [`ensure_stack`] first thing in
//! `main` (Tokio's runtime threads exist by then; the exec replaces them with the rest of the
//! process): with `RUST_MIN_STACK` unset, the binary executes itself again (same pid, arguments
//! and environment) with it set to [`STACK_BYTES`], enough for the deepest header a 131072-byte
//! frame can carry, measured with a margin (README, "Message limits"). Every other thread of the
//! process (Tokio's workers and blocking pool) gets the same size; it is address space, touched
//! only as deep as a thread goes. An operator who sets `RUST_MIN_STACK` decides for themselves,
//! and a connection to a broker whose `frame_max` exceeds what the stack holds is logged as an
//! error naming the size to set ([`check_frame_max`]).

use std::os::unix::process::CommandExt;

/// The variable the standard library reads its thread stack size from.
pub const STACK_VARIABLE: &str = "RUST_MIN_STACK";

/// The largest frame RabbitMQ accepts unless configured otherwise, and the one
/// [`STACK_BYTES`] is sized for.
pub const SIZED_FOR_FRAME_MAX: u32 = 131_072;

/// Stack bytes one byte of header may cost lapin's parser, measured (README, "Message limits")
/// and rounded up by about a third. An unoptimised build: 11.5 KB an array level (5 bytes),
/// 12.8 KB a table level (6 bytes): 2,296 bytes a header byte at most.
#[cfg(debug_assertions)]
pub const STACK_PER_HEADER_BYTE: usize = 3_000;
/// Stack bytes one byte of header may cost lapin's parser, measured (README, "Message limits")
/// and rounded up by about a third. A release build: 1.7 KB an array level (5 bytes), 2.1 KB a
/// table level (6 bytes): 349 bytes a header byte at most.
#[cfg(not(debug_assertions))]
pub const STACK_PER_HEADER_BYTE: usize = 480;

/// The stack [`ensure_stack`] asks for: the deepest header a [`SIZED_FOR_FRAME_MAX`] frame can
/// carry, at [`STACK_PER_HEADER_BYTE`].
pub const STACK_BYTES: usize = SIZED_FOR_FRAME_MAX as usize * STACK_PER_HEADER_BYTE;

/// With `RUST_MIN_STACK` unset, executes this binary again with it set to [`STACK_BYTES`].
/// Call it first in `main`, before any thread exists. Returns when the variable is already set,
/// or when the exec failed (with a warning on stderr: the binary then runs with the default
/// stack, and a deeply nested header can abort it).
pub fn ensure_stack() {
    if std::env::var_os(STACK_VARIABLE).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let argv0 = args.next();
    let error = match std::env::current_exe() {
        Ok(exe) => {
            let mut command = std::process::Command::new(exe);
            if let Some(argv0) = argv0 {
                command.arg0(argv0);
            }
            command
                .args(args)
                .env(STACK_VARIABLE, STACK_BYTES.to_string())
                .exec()
        }
        Err(e) => e,
    };
    eprintln!(
        "warning: could not restart with {STACK_VARIABLE}={STACK_BYTES} ({error}); running with \
         the default thread stack, which a deeply nested AMQP header can overflow. Set \
         {STACK_VARIABLE}={STACK_BYTES} in the environment."
    );
}

/// The stack the process's threads got: `RUST_MIN_STACK`, else the standard 2 MiB.
pub fn thread_stack() -> usize {
    std::env::var(STACK_VARIABLE)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2 * 1024 * 1024)
}

/// The largest frame whose headers a thread stack of `stack` bytes holds.
pub fn frame_max_held(stack: usize) -> usize {
    stack / STACK_PER_HEADER_BYTE
}

/// Logs an error when the broker's negotiated `frame_max` (its own limit: we ask for none)
/// allows headers deeper than this process's thread stack holds.
pub fn check_frame_max(frame_max: u32) {
    let stack = thread_stack();
    let held = frame_max_held(stack);
    let frame_max = usize::try_from(frame_max).unwrap_or(usize::MAX);
    if frame_max > held {
        let needed = frame_max.saturating_mul(STACK_PER_HEADER_BYTE);
        tracing::error!(
            frame_max,
            stack_bytes = stack,
            "the broker accepts frames larger than this process's thread stack can parse \
             safely: a deeply nested header could abort it; set {STACK_VARIABLE}={needed}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_holds_the_default_frame_and_the_default_stack_does_not() {
        assert!(frame_max_held(STACK_BYTES) >= SIZED_FOR_FRAME_MAX as usize);
        assert!(frame_max_held(2 * 1024 * 1024) < SIZED_FOR_FRAME_MAX as usize);
    }
}
