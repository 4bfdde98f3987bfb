//! Scopes: what a key may do. `admin` implies every other scope.

use std::fmt;
use std::str::FromStr;

/// One permission. The names are what `API_KEYS`, the CLI and the `api_keys` table spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /v1/orders`.
    OrdersWrite,
    /// `GET /v1/orders/{id}`, `GET /v1/orders/{id}/invoice`, `GET /v1/tasks/{id}`.
    OrdersRead,
    /// Sales reports: `POST /v1/reports/sales`, `GET /v1/reports/sales/{task_id}`,
    /// `GET /v1/reports/{task_id}/pdf`.
    Reports,
    /// fds-worker's `Score` RPC: order-api's own key.
    FdsScore,
    /// Everything, including the fraud reasons in answers, `client_ip` in an order's body,
    /// `ScoreBatch` and gRPC reflection.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::OrdersWrite,
        Scope::OrdersRead,
        Scope::Reports,
        Scope::FdsScore,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrdersWrite => "orders:write",
            Scope::OrdersRead => "orders:read",
            Scope::Reports => "reports",
            Scope::FdsScore => "fds:score",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::OrdersWrite => 1,
            Scope::OrdersRead => 2,
            Scope::Reports => 4,
            Scope::FdsScore => 8,
            Scope::Admin => 16,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a scope (orders:write, orders:read, reports, fds:score, admin)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| UnknownScope(s.trim().to_owned()))
    }
}

/// The scopes of one key.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Scopes {
        Scopes(scopes.into_iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Whether a key with these scopes may do what `scope` guards (`admin` may do everything).
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    pub fn is_admin(self) -> bool {
        self.allows(Scope::Admin)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes granted explicitly, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }

    /// Names joined by `sep` (`+` in `API_KEYS`, `,` on the command line).
    pub fn join(self, sep: &str) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(sep)
    }

    /// Scopes separated by `sep`; at least one.
    pub fn parse(text: &str, sep: char) -> Result<Scopes, UnknownScope> {
        let scopes = text
            .split(sep)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Scope>, _>>()?;
        if scopes.is_empty() {
            return Err(UnknownScope(String::new()));
        }
        Ok(Scopes::new(scopes))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({})", self.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_every_scope_and_others_only_themselves() {
        let admin = Scopes::new([Scope::Admin]);
        for scope in Scope::ALL {
            assert!(admin.allows(scope), "{scope}");
        }
        let writer = Scopes::new([Scope::OrdersWrite]);
        assert!(writer.allows(Scope::OrdersWrite));
        assert!(!writer.allows(Scope::OrdersRead));
        assert!(!writer.allows(Scope::Admin));
        assert!(!Scopes::default().allows(Scope::Reports));
    }

    #[test]
    fn scopes_parse_and_print_by_name() {
        let scopes = Scopes::parse("orders:read+fds:score", '+').ok();
        assert_eq!(
            scopes.map(|s| s.join(",")),
            Some("orders:read,fds:score".to_owned())
        );
        assert!(Scopes::parse("orders:delete", ',').is_err());
        assert!(Scopes::parse(" , ", ',').is_err());
    }
}
