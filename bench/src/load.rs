//! The run: N associations on one current-thread tokio runtime, each sending
//! its share of the instances one request at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_ul::pdu::PresentationContextProposed;
use nectar_codecs::command::{command_field, status};

use crate::client::{proposals, Association, ClientConfig, StoreRequests};
use crate::cpu::process_cpu_time;
use crate::report::Report;
use crate::template::Template;
use crate::uid::{UidGen, UidKind};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub client: ClientConfig,
    /// Concurrent associations.
    pub associations: usize,
    /// Instances in total, split evenly across the associations.
    pub instances: u64,
    /// Studies the instances are spread over (contiguous blocks of global
    /// instance numbers); each study has one series.
    pub studies: u64,
}

/// Most failure descriptions kept for the report.
const MAX_SAMPLES: usize = 10;

struct Shared {
    config: LoadConfig,
    templates: Vec<Template>,
    contexts: Vec<PresentationContextProposed>,
    context_ids: Vec<u8>,
    gen: UidGen,
}

#[derive(Default)]
struct Outcome {
    established: bool,
    error: Option<String>,
    sent: u64,
    successes: u64,
    warnings: u64,
    failures: u64,
    failure_samples: Vec<String>,
    dataset_bytes: u64,
    latencies_us: Vec<u32>,
}

impl Outcome {
    fn fail(&mut self, sample: impl FnOnce() -> String) {
        self.failures += 1;
        if self.failure_samples.len() < MAX_SAMPLES {
            self.failure_samples.push(sample());
        }
    }
}

/// Sends everything and measures. Blocks until every association is done.
pub fn run(config: LoadConfig, templates: Vec<Template>, gen: UidGen) -> Report {
    let (contexts, context_ids) = proposals(&templates);
    let shared = Arc::new(Shared {
        config,
        templates,
        contexts,
        context_ids,
        gen,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");

    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let outcomes: Vec<Outcome> = runtime.block_on(async {
        let n = shared.config.associations as u64;
        let total = shared.config.instances;
        let handles: Vec<_> = (0..n)
            .map(|k| {
                let shared = shared.clone();
                let range = k * total / n..(k + 1) * total / n;
                tokio::spawn(async move { association(&shared, k, range).await })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(handles.len());
        for (k, h) in handles.into_iter().enumerate() {
            outcomes.push(h.await.unwrap_or_else(|e| Outcome {
                error: Some(format!("association {k}: task failed: {e}")),
                ..Outcome::default()
            }));
        }
        outcomes
    });
    let elapsed = started.elapsed();
    let cpu = process_cpu_time().since(cpu_before);

    let c = &shared.config;
    let mut report = Report {
        host: c.client.host.clone(),
        port: c.client.port,
        called_ae: c.client.called_ae.clone(),
        templates: shared.templates.len(),
        studies: c.studies,
        associations_requested: c.associations,
        instances_requested: c.instances,
        elapsed,
        cpu,
        ..Report::default()
    };
    for o in outcomes {
        report.associations_established += usize::from(o.established);
        report.association_errors.extend(o.error);
        report.sent += o.sent;
        report.successes += o.successes;
        report.warnings += o.warnings;
        report.failures += o.failures;
        report.dataset_bytes += o.dataset_bytes;
        report.latencies_us.extend(o.latencies_us);
        for s in o.failure_samples {
            if report.failure_samples.len() < MAX_SAMPLES {
                report.failure_samples.push(s);
            }
        }
    }
    report.latencies_us.sort_unstable();
    report
}

async fn association(shared: &Shared, k: u64, range: std::ops::Range<u64>) -> Outcome {
    let mut out = Outcome {
        latencies_us: Vec::with_capacity((range.end - range.start) as usize),
        ..Outcome::default()
    };
    let c = &shared.config;
    let mut assoc = match Association::open(&c.client, &shared.contexts).await {
        Ok(a) => a,
        Err(e) => {
            out.error = Some(format!("association {k}: {e}"));
            return out;
        }
    };
    out.established = true;
    let peer_max_pdu = assoc.peer_max_pdu();
    let mut requests = StoreRequests::new(&shared.templates, &shared.context_ids, &shared.gen);
    let templates = shared.templates.len() as u64;
    let studies = c.studies.max(1);
    let mut message_id: u16 = 0;
    for g in range {
        message_id = message_id.wrapping_add(1).max(1);
        let template = (g % templates) as usize;
        let study = g * studies / c.instances.max(1);
        let request = requests.build(template, study, g, message_id, peer_max_pdu);
        let dataset_len = request.dataset_len as u64;
        let mut slices = request.slices;
        if let Err(e) = assoc.write_vectored_all(&mut slices).await {
            out.error = Some(format!("association {k}: instance {g}: {e}"));
            assoc.abort().await;
            return out;
        }
        let written = Instant::now();
        out.sent += 1;
        out.dataset_bytes += dataset_len;
        let rsp = match assoc.read_command().await {
            Ok(rsp) => rsp,
            Err(e) => {
                out.fail(|| format!("instance {g}: no response: {e}"));
                out.error = Some(format!("association {k}: instance {g}: {e}"));
                assoc.abort().await;
                return out;
            }
        };
        let latency = written.elapsed();
        out.latencies_us
            .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
        let uid = || shared.gen.uid_string(UidKind::Instance, g);
        if rsp.command_field != command_field::C_STORE_RSP
            || rsp.message_id_being_responded_to != Some(message_id)
        {
            out.fail(|| {
                format!(
                    "{}: unexpected response: command field {:#06x}, responding to {:?} (sent {message_id})",
                    uid(),
                    rsp.command_field,
                    rsp.message_id_being_responded_to
                )
            });
            continue;
        }
        match rsp.status.map(status::category) {
            Some(status::Category::Success) => out.successes += 1,
            Some(status::Category::Warning) => out.warnings += 1,
            _ => out.fail(|| {
                format!(
                    "{}: status {} {}",
                    uid(),
                    rsp.status
                        .map_or("missing".to_string(), |s| format!("{s:#06x}")),
                    rsp.error_comment.as_deref().unwrap_or("")
                )
            }),
        }
    }
    if let Err(e) = assoc.release().await {
        out.error = Some(format!("association {k}: release: {e}"));
    }
    out
}

/// Default limit on connecting, on each response and on the release.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
