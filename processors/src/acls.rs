//! Least-privilege ACLs for the secured stack, derived from the topologies themselves
//! (so a new input or store cannot be forgotten): one principal per bounded context,
//! plus the clients (`erp-client`: producers and the carrier) and the checker
//! (`erp-audit`). `erp acls` prints them as arguments of Kafka's own AclCommand, which
//! `scripts/stack.sh acls` applies as the super user (rust-rdkafka has no ACL API).

use std::collections::BTreeSet;

use erp_schemas::topics::Topics;

use crate::app::{Context, SagaSettings};
use crate::engine::Topology;

/// One AclCommand invocation: allow `principal` the `operations` on every resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclGrant {
    pub principal: String,
    pub prefixed: bool,
    pub operations: Vec<&'static str>,
    pub topics: Vec<String>,
    pub groups: Vec<String>,
    pub transactional_ids: Vec<String>,
}

impl AclGrant {
    fn new(principal: &str, operations: &[&'static str]) -> Self {
        Self {
            principal: format!("User:{principal}"),
            prefixed: false,
            operations: operations.to_vec(),
            topics: Vec::new(),
            groups: Vec::new(),
            transactional_ids: Vec::new(),
        }
    }

    /// AclCommand's arguments (without `--bootstrap-server` and `--command-config`).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--add".to_string(),
            "--allow-principal".into(),
            self.principal.clone(),
        ];
        if self.prefixed {
            a.extend(["--resource-pattern-type".into(), "prefixed".into()]);
        }
        for op in &self.operations {
            a.extend(["--operation".into(), (*op).into()]);
        }
        let resources = [
            ("--topic", &self.topics),
            ("--group", &self.groups),
            ("--transactional-id", &self.transactional_ids),
        ];
        for (flag, names) in resources {
            for n in names {
                a.extend([flag.to_string(), n.clone()]);
            }
        }
        a
    }
}

/// The principal a context's processors log in as.
pub fn principal(context: Context) -> String {
    format!("erp-{}", context_name(context))
}

fn context_name(context: Context) -> &'static str {
    match context {
        Context::Order => "order",
        Context::Inventory => "inventory",
        Context::Payment => "payment",
        Context::Shipping => "shipping",
        Context::Customer => "customer",
    }
}

/// The command topic a context's query API publishes to (its REST command endpoints).
fn api_command_topic(context: Context, topics: &Topics) -> Option<String> {
    match context {
        Context::Order => Some(topics.order_commands()),
        Context::Inventory => Some(topics.inventory_commands()),
        Context::Shipping => Some(topics.shipping_commands()),
        Context::Customer => Some(topics.customer_commands()),
        Context::Payment => None,
    }
}

/// What one context's processes need, and nothing else:
/// - read its inputs (and global-store topics) in its consumer groups;
/// - write its outputs and the command topic of its query API;
/// - everything on its own internal topics (`<application id>-…`: changelogs, DLQ,
///   journal, repartition) and transactional ids (`<application id>-<instance>`).
pub fn context_grants(
    context: Context,
    topologies: &[Topology],
    topics: &Topics,
    all_groups: &[String],
) -> Vec<AclGrant> {
    let who = principal(context);
    let apps: BTreeSet<String> = topologies
        .iter()
        .map(|t| format!("{}-", t.application_id))
        .collect();
    let internal = |name: &String| apps.iter().any(|p| name.starts_with(p.as_str()));
    let inputs: BTreeSet<String> = topologies
        .iter()
        .flat_map(|t| {
            t.source_topics
                .iter()
                .cloned()
                .chain(t.global_stores.iter().map(|g| g.topic.clone()))
        })
        .filter(|n| !internal(n))
        .collect();
    let outputs: BTreeSet<String> = topologies
        .iter()
        .flat_map(|t| t.sink_topics.iter().cloned())
        .chain(api_command_topic(context, topics))
        .filter(|n| !internal(n))
        .collect();

    let mut read = AclGrant::new(&who, &["Read", "Describe"]);
    read.topics = inputs.into_iter().collect();
    read.groups = topologies
        .iter()
        .map(|t| t.application_id.clone())
        .collect();
    let mut find = AclGrant::new(&who, &["Describe"]);
    // The query API forwards a lookup to whichever instance hosts the key, of any
    // application: it reads the assignments of every group (Describe, never Read).
    find.groups = crate::engine::ASSIGN_ONLY_GROUPS
        .iter()
        .map(|g| g.to_string())
        .chain(all_groups.iter().cloned())
        .collect();
    let mut write = AclGrant::new(&who, &["Write", "Describe"]);
    write.topics = outputs.into_iter().collect();
    let mut own_topics = AclGrant::new(
        &who,
        &["Read", "Write", "Create", "Describe", "DescribeConfigs"],
    );
    own_topics.prefixed = true;
    own_topics.topics = apps.iter().cloned().collect();
    let mut own_transactions = AclGrant::new(&who, &["Write", "Describe"]);
    own_transactions.prefixed = true;
    own_transactions.transactional_ids = apps.into_iter().collect();
    vec![read, write, own_topics, own_transactions, find]
}

/// Producers of commands (`erp generate`, files, the carrier's dispatch/deliver) and
/// the carrier's reading of shipments.
pub fn client_grants(topics: &Topics) -> Vec<AclGrant> {
    let mut write = AclGrant::new("erp-client", &["Write", "Describe"]);
    write.topics = vec![
        topics.order_commands(),
        topics.customer_commands(),
        topics.inventory_commands(),
        topics.shipping_commands(),
    ];
    let mut carrier = AclGrant::new("erp-client", &["Read", "Describe"]);
    carrier.topics = vec![topics.shipping_events()];
    carrier.groups = vec![format!("{}erp-carrier", topics.prefix)];
    vec![write, carrier]
}

/// `erp check` reads every topic of the prefix (commands, events, DLQs) and writes none.
pub fn audit_grants(topics: &Topics) -> Vec<AclGrant> {
    let mut read = AclGrant::new("erp-audit", &["Read", "Describe"]);
    read.topics = vec![if topics.prefix.is_empty() {
        "*".into()
    } else {
        topics.prefix.clone()
    }];
    read.prefixed = !topics.prefix.is_empty();
    let mut group = AclGrant::new("erp-audit", &["Read", "Describe"]);
    group.groups = vec!["erp-check".into()];
    vec![read, group]
}

/// Every grant of the secured stack.
pub fn all_grants(
    topics: &Topics,
    saga: SagaSettings,
    serde: std::sync::Arc<erp_schemas::AvroSerde>,
) -> Vec<AclGrant> {
    let mut grants = Vec::new();
    let all_groups: Vec<String> = Context::ALL
        .iter()
        .flat_map(|c| c.topologies(topics, serde.clone(), saga))
        .map(|t| t.application_id)
        .collect();
    for context in Context::ALL {
        let topologies = context.topologies(topics, serde.clone(), saga);
        grants.extend(context_grants(context, &topologies, topics, &all_groups));
    }
    grants.extend(client_grants(topics));
    grants.extend(audit_grants(topics));
    grants
}

#[cfg(test)]
mod tests {
    use super::*;
    use erp_schemas::AvroSerde;
    use std::sync::Arc;

    fn grants_of(context: Context) -> Vec<AclGrant> {
        let topics = Topics::new(String::new());
        let serde = Arc::new(AvroSerde::new("http://127.0.0.1:9"));
        let topologies = context.topologies(&topics, serde, SagaSettings::default());
        context_grants(context, &topologies, &topics, &[])
    }

    #[test]
    fn payment_reads_its_commands_writes_its_events_and_owns_only_its_internals() {
        let g = grants_of(Context::Payment);
        assert_eq!(g[0].topics, vec!["payment-commands"]);
        assert_eq!(g[0].groups, vec!["erp-payment"]);
        assert_eq!(g[1].topics, vec!["payment-events"]);
        assert!(g[2].prefixed && g[2].topics == vec!["erp-payment-"]);
        assert_eq!(g[3].transactional_ids, vec!["erp-payment-"]);
        let everything: Vec<String> = g.iter().flat_map(|g| g.topics.clone()).collect();
        assert!(
            !everything.iter().any(|t| t.starts_with("order")),
            "{everything:?}"
        );
    }

    #[test]
    fn order_reads_the_customer_table_and_the_replies_and_customer_owns_its_loyalty_app() {
        let order = grants_of(Context::Order);
        for input in [
            "order-commands",
            "order-replies",
            "payment-events",
            "shipping-events",
            "customers",
        ] {
            assert!(
                order[0].topics.iter().any(|t| t == input),
                "{input}: {:?}",
                order[0].topics
            );
        }
        for output in [
            "order-events",
            "inventory-commands",
            "payment-commands",
            "shipping-commands",
        ] {
            assert!(
                order[1].topics.iter().any(|t| t == output),
                "{output}: {:?}",
                order[1].topics
            );
        }
        let customer = grants_of(Context::Customer);
        assert_eq!(customer[0].groups.len(), 2, "{:?}", customer[0].groups);
        // The repartition topic is the loyalty app's own: covered by its prefix.
        assert!(
            customer[1]
                .topics
                .iter()
                .all(|t| !t.contains("repartition")),
            "{:?}",
            customer[1].topics
        );
    }

    #[test]
    fn args_are_aclcommands() {
        let g = &grants_of(Context::Payment)[2];
        let args = g.args().join(" ");
        assert!(
            args.starts_with("--add --allow-principal User:erp-payment --resource-pattern-type prefixed --operation Read"),
            "{args}"
        );
        assert!(args.ends_with("--topic erp-payment-"), "{args}");
    }
}
