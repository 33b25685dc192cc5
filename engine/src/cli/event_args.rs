//! The event flags of `nectar serve`: study quiet period, naming, and NATS JetStream.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::events::nats::{self, NatsAuth, NatsConfig};
use crate::events::EventsConfig;
use crate::server::EventsSetup;

#[derive(Debug, Args)]
pub struct EventArgs {
    /// Record no events: no outbox, no study revisions, no /events, no NATS.
    #[arg(long, env = "NECTAR_NO_EVENTS")]
    pub no_events: bool,

    /// Quiet time after a study's last new, replaced or deleted instance before its revision
    /// is emitted: a number of seconds or a value with unit ms, s, m or h.
    #[arg(long, env = "NECTAR_STUDY_QUIET_PERIOD", default_value = "30s", value_parser = parse_duration)]
    pub study_quiet_period: Duration,

    /// CloudEvents `source` of every event. Default: urn:nectar:<host name>.
    #[arg(long, env = "NECTAR_EVENT_SOURCE")]
    pub event_source: Option<String>,

    /// `provider` named in ImageStoredEvent and DicomAvailableEvent.
    #[arg(long, env = "NECTAR_EVENT_PROVIDER", default_value = "nectar")]
    pub event_provider: String,

    /// Base URL of the DICOMweb service as clients reach it, e.g. https://pacs.example/dicomweb:
    /// used in RetrieveURL and BulkDataURI values and the WADO-RS URLs of events. Default: built
    /// from each request's Host header (events: the internal URL).
    #[arg(long, env = "NECTAR_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Base URL of the DICOMweb service inside the deployment. Default:
    /// http://<bind address, or 127.0.0.1 for 0.0.0.0>:<http port>/dicomweb.
    #[arg(long, env = "NECTAR_INTERNAL_URL")]
    pub internal_url: Option<String>,

    /// How long events stay in the outbox (for `/events` resume) once published.
    #[arg(long, env = "NECTAR_OUTBOX_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub outbox_retention: Duration,

    /// Outbox events a bounded consumer (NATS) may leave unpublished before ingest waits.
    #[arg(long, env = "NECTAR_OUTBOX_BOUND", default_value_t = 100_000)]
    pub outbox_bound: i64,

    /// Publish events to this NATS server (JetStream), e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "NECTAR_NATS_URL")]
    pub nats_url: Option<String>,

    /// JetStream stream the events go to, created if missing.
    #[arg(long, env = "NECTAR_NATS_STREAM", default_value = "NECTAR_EVENTS")]
    pub nats_stream: String,

    /// Subject prefix: events go to <prefix>.<type>, the stream takes <prefix>.>.
    #[arg(long, env = "NECTAR_NATS_SUBJECT_PREFIX", default_value = "nectar.events")]
    pub nats_subject_prefix: String,

    /// Retention of a stream nectar creates: limits, interest or workqueue.
    #[arg(long, env = "NECTAR_NATS_RETENTION", default_value = "limits")]
    pub nats_retention: String,

    /// How long JetStream remembers event ids to drop duplicates (stream nectar creates).
    #[arg(long, env = "NECTAR_NATS_DUPLICATE_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub nats_duplicate_window: Duration,

    /// Token authentication.
    #[arg(long, env = "NECTAR_NATS_TOKEN")]
    pub nats_token: Option<String>,

    /// User for user/password authentication (with --nats-password).
    #[arg(long, env = "NECTAR_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,

    /// Password for user/password authentication.
    #[arg(long, env = "NECTAR_NATS_PASSWORD", requires = "nats_user")]
    pub nats_password: Option<String>,

    /// NKey seed for NKey authentication.
    #[arg(long, env = "NECTAR_NATS_NKEY_SEED")]
    pub nats_nkey_seed: Option<String>,

    /// Credentials file (.creds: JWT and NKey seed).
    #[arg(long, env = "NECTAR_NATS_CREDENTIALS")]
    pub nats_credentials: Option<PathBuf>,

    /// CA certificate file for TLS to the NATS server. Setting it makes TLS required.
    #[arg(long, env = "NECTAR_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
}

/// Parses `30`, `30s`, `500ms`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl EventArgs {
    /// Builds the events setup, or `None` with --no-events.
    pub fn setup(&self, bind: IpAddr, http_port: u16) -> Result<Option<EventsSetup>, String> {
        if self.no_events {
            return Ok(None);
        }
        let host = if bind.is_unspecified() { "127.0.0.1".to_owned() } else { bind.to_string() };
        let internal = self.internal_url.clone().unwrap_or_else(|| format!("http://{host}:{http_port}/dicomweb"));
        let external = self.public_url.clone().unwrap_or_else(|| internal.clone());
        let config = EventsConfig {
            source: self.event_source.clone().unwrap_or_else(|| format!("urn:nectar:{}", host_name())),
            provider: self.event_provider.clone(),
            internal_base_url: internal.trim_end_matches('/').to_owned(),
            external_base_url: external.trim_end_matches('/').to_owned(),
            quiet_period: self.study_quiet_period,
            retention: self.outbox_retention,
        };
        let nats = match &self.nats_url {
            None => None,
            Some(url) => Some(NatsConfig {
                url: url.clone(),
                auth: self.nats_auth()?,
                tls_ca_file: self.nats_tls_ca.clone(),
                stream: self.nats_stream.clone(),
                subject_prefix: self.nats_subject_prefix.clone(),
                retention: nats::parse_retention(&self.nats_retention)?,
                duplicate_window: self.nats_duplicate_window,
            }),
        };
        let outbox_bound = nats.as_ref().map(|_| self.outbox_bound);
        Ok(Some(EventsSetup { config: Arc::new(config), nats, outbox_bound }))
    }

    fn nats_auth(&self) -> Result<NatsAuth, String> {
        let given = [
            self.nats_token.is_some(),
            self.nats_user.is_some(),
            self.nats_nkey_seed.is_some(),
            self.nats_credentials.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err("give one NATS authentication: token, user/password, NKey seed or credentials file".into());
        }
        Ok(if let Some(token) = &self.nats_token {
            NatsAuth::Token(token.clone())
        } else if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            NatsAuth::UserPassword { user: user.clone(), password: password.clone() }
        } else if let Some(seed) = &self.nats_nkey_seed {
            NatsAuth::NKey(seed.clone())
        } else if let Some(path) = &self.nats_credentials {
            NatsAuth::CredentialsFile(path.clone())
        } else {
            NatsAuth::None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
