//! The wire contract every ShopFDS service agrees on: the Celery message protocol v2 envelope,
//! task names and their typed keyword arguments, queue and exchange names, and task states.
//! Protocol v1 messages are read too, converted to v2 by [`TaskMessage::decode`].

pub mod canvas;
pub mod compression;
mod decode;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod message;
pub mod money;
pub mod names;
pub mod payloads;
pub mod pyjson;
pub mod result;
pub mod signatures;
pub mod state;
mod v1;

pub use message::{
    Embed, MessageProperties, ProtocolError, Signature, TaskArgs, TaskHeaders, TaskMessage,
    TimeLimit,
};
pub use names::{WORK_QUEUES, tasks};
pub use signatures::{TASK_SIGNATURES, TaskSignature, check_arguments, task_signature};
pub use state::TaskState;
