//! Redis key names, decided here and nowhere else.
//!
//! Every key of one event carries the hash tag `{e:<id>}`, so each script touches
//! one cluster slot and the layout runs unchanged on Redis Cluster. The configured
//! prefix comes first, so tests and deployments can share one Redis.

/// Builds key names under one prefix (`hg:` by default).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn event(&self, event_id: i64) -> EventKeys {
        EventKeys {
            base: format!("{}{{e:{event_id}}}:", self.prefix),
        }
    }
}

/// The keys of one event; all share its hash tag.
#[derive(Debug, Clone)]
pub struct EventKeys {
    base: String,
}

impl EventKeys {
    /// Hash `name venue startsAt totalSeats status`; written last when loading,
    /// so its presence means the inventory is complete.
    pub fn event(&self) -> String {
        format!("{}event", self.base)
    }

    /// Hash seat id -> the seat's JSON (`{"id","section","row","number"}`).
    pub fn seats(&self) -> String {
        format!("{}seats", self.base)
    }

    /// Sorted set of the seat ids nobody holds, scored by seat id (for paging).
    pub fn available(&self) -> String {
        format!("{}available", self.base)
    }

    /// String held by the one process loading this event's inventory.
    pub fn loading(&self) -> String {
        format!("{}loading", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_an_event_shares_its_hash_tag() {
        let keys = Keys::new("hg:").event(42);
        for key in [keys.event(), keys.seats(), keys.available(), keys.loading()] {
            assert!(key.starts_with("hg:{e:42}:"), "{key}");
        }
        assert_eq!(keys.available(), "hg:{e:42}:available");
    }
}
