//! The order as the API accepts it: parsed and validated at the edge, so an invalid order cannot
//! exist past `ValidOrder::parse`.

pub mod order;

pub use order::{OrderRequest, ValidOrder};
