//! Every Kafka client of a process starts from [`client`]: one process is one principal
//! (a processor context, the client tools, the checker), so its security settings are
//! set once at start-up ([`use_security`]) and apply to every producer, consumer and
//! admin client it creates — the engine's, the query API's and the tools' alike.

use std::sync::OnceLock;

use rdkafka::ClientConfig;

/// How a process authenticates to the brokers.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KafkaSecurity {
    /// `PLAINTEXT`, `SASL_PLAINTEXT`, `SSL` or `SASL_SSL`.
    pub protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (SASL protocols only).
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    /// CA certificate (PEM) that signed the brokers' certificates (SSL protocols).
    pub ssl_ca_location: Option<String>,
}

impl std::fmt::Debug for KafkaSecurity {
    // The password never reaches a log line, whatever prints this.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSecurity")
            .field("protocol", &self.protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .field("ssl_ca_location", &self.ssl_ca_location)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error(
        "kafka_security_protocol must be PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL, got {0:?}"
    )]
    Protocol(String),
    #[error("kafka_sasl_mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got {0:?}")]
    Mechanism(String),
    #[error("{0} needs kafka_sasl_mechanism, kafka_sasl_username and kafka_sasl_password")]
    MissingCredentials(String),
    #[error(
        "SASL settings are set but kafka_security_protocol is {0} (use SASL_PLAINTEXT or SASL_SSL)"
    )]
    CredentialsWithoutSasl(String),
    #[error("the Kafka security settings were already chosen for this process")]
    AlreadySet,
}

impl KafkaSecurity {
    pub fn plaintext() -> Self {
        Self {
            protocol: "PLAINTEXT".into(),
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), SecurityError> {
        let sasl = match self.protocol.as_str() {
            "PLAINTEXT" | "SSL" => false,
            "SASL_PLAINTEXT" | "SASL_SSL" => true,
            other => return Err(SecurityError::Protocol(other.into())),
        };
        if let Some(m) = &self.sasl_mechanism
            && !matches!(m.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512")
        {
            return Err(SecurityError::Mechanism(m.clone()));
        }
        let any = self.sasl_mechanism.is_some()
            || self.sasl_username.is_some()
            || self.sasl_password.is_some();
        let all = self.sasl_mechanism.is_some()
            && self.sasl_username.as_deref().is_some_and(|u| !u.is_empty())
            && self.sasl_password.as_deref().is_some_and(|p| !p.is_empty());
        match (sasl, any, all) {
            (true, _, false) => Err(SecurityError::MissingCredentials(self.protocol.clone())),
            (false, true, _) => Err(SecurityError::CredentialsWithoutSasl(self.protocol.clone())),
            _ => Ok(()),
        }
    }

    /// The librdkafka properties these settings stand for.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.protocol.is_empty() || self.protocol == "PLAINTEXT" {
            return p;
        }
        p.push(("security.protocol", self.protocol.clone()));
        let fields = [
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
            ("ssl.ca.location", &self.ssl_ca_location),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                p.push((key, v.clone()));
            }
        }
        p
    }
}

static SECURITY: OnceLock<KafkaSecurity> = OnceLock::new();

/// Chooses this process's Kafka security settings; once, before the first client.
pub fn use_security(security: KafkaSecurity) -> Result<(), SecurityError> {
    security.validate()?;
    SECURITY
        .set(security)
        .map_err(|_| SecurityError::AlreadySet)
}

/// A client configuration carrying this process's security settings (plaintext when
/// none were chosen); the caller adds `bootstrap.servers` and its own properties.
pub fn client() -> ClientConfig {
    let mut config = ClientConfig::new();
    if let Some(security) = SECURITY.get() {
        for (key, value) in security.properties() {
            config.set(key, value);
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scram(user: &str, password: &str) -> KafkaSecurity {
        KafkaSecurity {
            protocol: "SASL_PLAINTEXT".into(),
            sasl_mechanism: Some("SCRAM-SHA-256".into()),
            sasl_username: Some(user.into()),
            sasl_password: Some(password.into()),
            ssl_ca_location: None,
        }
    }

    #[test]
    fn sasl_needs_all_three_credentials_and_plaintext_none() {
        assert_eq!(scram("erp-order", "s3cret").validate(), Ok(()));
        assert_eq!(KafkaSecurity::plaintext().validate(), Ok(()));
        let mut no_password = scram("erp-order", "");
        assert!(matches!(
            no_password.validate(),
            Err(SecurityError::MissingCredentials(_))
        ));
        no_password.sasl_password = None;
        assert!(no_password.validate().is_err());
        let mut stray = scram("erp-order", "s3cret");
        stray.protocol = "PLAINTEXT".into();
        assert!(matches!(
            stray.validate(),
            Err(SecurityError::CredentialsWithoutSasl(_))
        ));
        let mut gssapi = scram("erp-order", "s3cret");
        gssapi.sasl_mechanism = Some("GSSAPI".into());
        assert!(matches!(
            gssapi.validate(),
            Err(SecurityError::Mechanism(_))
        ));
        let mut typo = KafkaSecurity::plaintext();
        typo.protocol = "SASL".into();
        assert!(matches!(typo.validate(), Err(SecurityError::Protocol(_))));
    }

    #[test]
    fn properties_are_librdkafkas_and_the_password_is_never_printed() {
        let s = scram("erp-order", "s3cret-value");
        let props = s.properties();
        assert!(props.contains(&("security.protocol", "SASL_PLAINTEXT".into())));
        assert!(props.contains(&("sasl.mechanism", "SCRAM-SHA-256".into())));
        assert!(props.contains(&("sasl.username", "erp-order".into())));
        assert!(props.contains(&("sasl.password", "s3cret-value".into())));
        assert!(KafkaSecurity::plaintext().properties().is_empty());
        let printed = format!("{s:?}");
        assert!(!printed.contains("s3cret-value"), "{printed}");
        assert!(printed.contains("erp-order"), "{printed}");
    }
}
