//! The order as the API accepts it: parsed and validated at the edge, so an invalid order cannot
//! exist past `ValidOrder::parse`; likewise the ids of the `GET` routes. And the order's plan:
//! the tasks it sets off ([`plan`]).

pub mod ids;
pub mod order;
pub mod plan;
pub mod text;

pub use ids::TaskId;
pub use order::{AmountLimits, MAX_SAFE_AMOUNT, OrderRequest, ValidOrder};
