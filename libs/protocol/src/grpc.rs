//! The fds.v1 gRPC contract (`proto/fds/v1/fds.proto`), generated at build time: messages,
//! the `FraudDetection` client (used by order-api) and server trait (implemented by fds-worker),
//! and the encoded file descriptor set for server reflection.

/// `package fds.v1`.
pub mod fds_v1 {
    #![allow(
        clippy::all,
        clippy::pedantic,
        clippy::unwrap_used,
        clippy::expect_used
    )]
    tonic::include_proto!("fds.v1");
}

pub use fds_v1::fraud_detection_client::FraudDetectionClient;
pub use fds_v1::fraud_detection_server::{FraudDetection, FraudDetectionServer};
pub use fds_v1::{
    Decision, Item, Reason, ScoreBatchRequest, ScoreBatchResponse, ScoreRequest, ScoreResponse,
};

/// The fully qualified service name, as health checks and reflection list it.
pub const SERVICE_NAME: &str = "fds.v1.FraudDetection";

/// The encoded `FileDescriptorSet` of `fds.proto` and its imports, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fds_v1_descriptor.bin"));
