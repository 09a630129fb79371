//! The servers to connect again after mcp-client is started again (SPEC §5: "after a
//! restart, reconnect the servers that were connected").

use std::collections::{BTreeMap, BTreeSet};

use mag_common::wire::{Servers, Status};

/// The servers to connect again after a restart: those connected through the API or seen
/// connected, minus those disconnected through the API or seen disconnected on purpose.
///
/// API changes are numbered, so a poll answered before a change cannot undo it.
#[derive(Debug, Default)]
pub struct Wanted {
    seq: u64,
    names: BTreeSet<String>,
    changed_at: BTreeMap<String, u64>,
}

impl Wanted {
    /// The API connected (`true`) or disconnected or removed (`false`) `name`.
    pub fn set(&mut self, name: &str, connected: bool) {
        self.seq += 1;
        self.changed_at.insert(name.to_string(), self.seq);
        if connected {
            self.names.insert(name.to_string());
        } else {
            self.names.remove(name);
        }
    }

    /// Call before asking `/servers`; pass the value to [`Self::apply_poll`].
    pub fn begin_poll(&self) -> u64 {
        self.seq
    }

    /// Applies a `/servers` answer asked for at `since`: connected servers are wanted;
    /// `disconnected` or `disabled` ones and those no longer listed are not; `failed` or
    /// `connecting` ones keep their place.
    pub fn apply_poll(&mut self, since: u64, servers: &Servers) {
        let newer: BTreeSet<String> = self
            .changed_at
            .iter()
            .filter(|(_, at)| **at > since)
            .map(|(name, _)| name.clone())
            .collect();
        for (name, view) in servers {
            if newer.contains(name) {
                continue;
            }
            if view.connected {
                self.names.insert(name.clone());
            } else if matches!(view.status, Status::Disconnected | Status::Disabled) {
                self.names.remove(name);
            }
        }
        self.names
            .retain(|name| servers.contains_key(name) || newer.contains(name));
        self.changed_at.retain(|_, at| *at > since);
    }

    /// The wanted servers.
    pub fn names(&self) -> BTreeSet<String> {
        self.names.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{Value, json};

    /// `/servers` with just `connected` and `status` given per server.
    fn servers(value: Value) -> Servers {
        value
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, view)| {
                let mut full = json!({
                    "init_attempted": true, "tools": [], "error": null,
                    "transport_type": "stdio", "pid": null, "connected_since": null,
                    "reconnects": 0, "attempts": 0, "protocol_version": null,
                    "auto_approve": [],
                });
                full["connected"] = view["connected"].clone();
                full["status"] = view["status"].clone();
                (name.clone(), serde_json::from_value(full).unwrap())
            })
            .collect()
    }

    #[test]
    fn polls_follow_the_client_but_never_undo_a_newer_api_change() {
        let mut wanted = Wanted::default();
        let since = wanted.begin_poll();
        wanted.apply_poll(
            since,
            &servers(json!({
                "a": {"connected": true, "status": "connected"},
                "b": {"connected": false, "status": "failed"},
                "c": {"connected": false, "status": "disconnected"},
            })),
        );
        assert_eq!(wanted.names(), BTreeSet::from(["a".to_string()]));

        // A poll asked before the API connected "c" does not undo it.
        let since = wanted.begin_poll();
        wanted.set("c", true);
        wanted.apply_poll(
            since,
            &servers(json!({
                "a": {"connected": false, "status": "failed"},
                "c": {"connected": false, "status": "disconnected"},
            })),
        );
        assert_eq!(
            wanted.names(),
            BTreeSet::from(["a".to_string(), "c".to_string()])
        );

        // A later poll applies; a server gone from the config is forgotten.
        let since = wanted.begin_poll();
        wanted.apply_poll(
            since,
            &servers(json!({"c": {"connected": false, "status": "disconnected"}})),
        );
        assert!(wanted.names().is_empty());
    }
}
