//! The order as the API accepts it: parsed and validated at the edge, so an invalid order cannot
//! exist past `ValidOrder::parse`; likewise a sales report's request (`parse_sales_report`) and
//! the ids of the `GET` routes. And the order's plan: the tasks it sets off ([`plan`]).

pub mod ids;
pub mod json;
pub mod order;
pub mod plan;
pub mod report;
pub mod text;

pub use ids::TaskId;
pub use order::{AmountLimits, MAX_SAFE_AMOUNT, OrderRequest, ValidOrder};
pub use report::parse_sales_report;
