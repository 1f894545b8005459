//! Stable names guard: a store that disappears from a topology (renamed, removed) would
//! silently leave its state behind and start empty. The stores an application id had
//! are recorded on disk (`<state dir>/<application id>/topology.json`) and visible on
//! the broker as `<application id>-<store>-changelog` topics; starting without one of
//! them fails unless the operator allows it explicitly.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EngineError;
use super::processor::Topology;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    application_id: String,
    stores: BTreeSet<String>,
    source_topics: Vec<String>,
}

/// Fails if stores known for this application id (on disk or by their changelog topics
/// on the broker) are not in `topology`, unless `allow_change`; then records the
/// topology.
pub(crate) fn check_stable_names(
    state_dir: &Path,
    topology: &Topology,
    broker_topics: &[String],
    allow_change: bool,
) -> Result<(), EngineError> {
    let app = &topology.application_id;
    let declared: BTreeSet<String> = topology.stores.iter().cloned().collect();
    let mut known: BTreeSet<String> = BTreeSet::new();
    let path = state_dir.join(app).join("topology.json");
    if let Ok(bytes) = std::fs::read(&path) {
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::Config(format!("{} is unreadable: {e}", path.display())))?;
        known.extend(manifest.stores);
    }
    let prefix = format!("{app}-");
    for t in broker_topics {
        if let Some(store) = t
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix("-changelog"))
        {
            known.insert(store.to_string());
        }
    }
    let missing: Vec<&String> = known.difference(&declared).collect();
    if !missing.is_empty() {
        let msg = format!(
            "application {app} had stores {missing:?} that this topology does not declare (it declares {declared:?}); \
             starting would leave their state behind. Restore the names, or start with \
             ERP_ALLOW_TOPOLOGY_CHANGE=true to accept the change"
        );
        if !allow_change {
            return Err(EngineError::Config(msg));
        }
        tracing::warn!("{msg}: allowed by configuration");
    }
    let manifest = Manifest {
        application_id: app.clone(),
        stores: declared,
        source_topics: topology.source_topics.clone(),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().expect("has parent"))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&manifest).expect("serialisable"),
        )?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| EngineError::Config(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn topology(stores: &[&str]) -> Topology {
        Topology {
            application_id: "app".into(),
            source_topics: vec!["in".into()],
            sink_topics: vec![],
            stores: stores.iter().map(|s| s.to_string()).collect(),
            global_stores: vec![],
            processor: Arc::new(|_| unreachable!("not run")),
        }
    }

    #[test]
    fn a_renamed_store_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        check_stable_names(dir.path(), &topology(&["orders"]), &[], false).unwrap();
        let err =
            check_stable_names(dir.path(), &topology(&["orders-v2"]), &[], false).unwrap_err();
        assert!(err.to_string().contains("[\"orders\"]"), "{err}");
        check_stable_names(dir.path(), &topology(&["orders-v2"]), &[], true).unwrap();
        // Accepted once, the new names are the record.
        check_stable_names(dir.path(), &topology(&["orders-v2"]), &[], false).unwrap();
    }

    #[test]
    fn changelog_topics_on_the_broker_count_even_with_an_empty_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let topics = vec![
            "app-orders-changelog".to_string(),
            "other-x-changelog".to_string(),
        ];
        assert!(check_stable_names(dir.path(), &topology(&["orders"]), &topics, false).is_ok());
        assert!(check_stable_names(dir.path(), &topology(&["renamed"]), &topics, false).is_err());
    }
}
