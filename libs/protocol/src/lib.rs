//! The wire contract every ShopFDS service agrees on: the Celery message protocol v2 envelope,
//! task names and their typed keyword arguments, queue and exchange names, and task states.

pub mod canvas;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod message;
pub mod money;
pub mod names;
pub mod payloads;
pub mod pyjson;
pub mod result;
pub mod state;

pub use message::{
    Embed, MessageProperties, ProtocolError, Signature, TaskArgs, TaskHeaders, TaskMessage,
    TimeLimit,
};
pub use names::{WORK_QUEUES, tasks};
pub use state::TaskState;
