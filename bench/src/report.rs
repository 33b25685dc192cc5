//! The figures of one run, as text and JSON.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cpu::CpuTime;

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub host: String,
    pub port: u16,
    pub called_ae: String,
    pub templates: usize,
    pub studies: u64,
    pub associations_requested: usize,
    pub associations_established: usize,
    /// One line per association that failed to open or broke off.
    pub association_errors: Vec<String>,
    pub instances_requested: u64,
    /// Requests written completely.
    pub sent: u64,
    pub successes: u64,
    pub warnings: u64,
    /// Responses with a failure status, plus requests written whose
    /// response never came (the association broke).
    pub failures: u64,
    /// The first few failure statuses and comments.
    pub failure_samples: Vec<String>,
    /// Data set bytes of the requests sent.
    pub dataset_bytes: u64,
    pub elapsed: Duration,
    /// Microseconds from the last byte of a request written to its response
    /// decoded, one per response, sorted.
    pub latencies_us: Vec<u32>,
    /// nectar-load's own CPU time during the run. On loopback the system
    /// part includes the kernel's TCP receive processing of what it sends,
    /// which runs in the sender's context.
    pub cpu: CpuTime,
}

impl Report {
    /// Whether the run is a success: every association established and
    /// released cleanly, every instance sent and acknowledged without failure.
    pub fn ok(&self) -> bool {
        self.failures == 0
            && self.association_errors.is_empty()
            && self.associations_established == self.associations_requested
            && self.successes + self.warnings == self.instances_requested
    }

    /// Acknowledged (success or warning) instances per second of wall time.
    pub fn instances_per_sec(&self) -> f64 {
        (self.successes + self.warnings) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Data set megabytes (10^6 bytes) sent per second of wall time.
    pub fn mb_per_sec(&self) -> f64 {
        self.dataset_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile of the latencies, in microseconds (0 if none).
    pub fn latency_us(&self, q: f64) -> u32 {
        let v = &self.latencies_us;
        if v.is_empty() {
            return 0;
        }
        let rank = (q * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// CPU microseconds (user + system) per instance sent.
    pub fn cpu_us_per_instance(&self) -> f64 {
        per_instance_us(self.cpu.total(), self.sent)
    }

    /// Human-readable lines.
    pub fn to_text(&self) -> String {
        let ms = |us: u32| f64::from(us) / 1000.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "nectar-load: {}:{} ({}), {} association(s), {} instance(s) over {} study(ies), {} template(s)",
            self.host,
            self.port,
            self.called_ae,
            self.associations_requested,
            self.instances_requested,
            self.studies,
            self.templates
        );
        let _ = writeln!(
            s,
            "associations  {} of {} established",
            self.associations_established, self.associations_requested
        );
        let _ = writeln!(
            s,
            "sent          {} instance(s), {:.1} MB of data sets",
            self.sent,
            self.dataset_bytes as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "results       {} success, {} warning, {} failure, {} not sent",
            self.successes,
            self.warnings,
            self.failures,
            self.instances_requested.saturating_sub(self.sent)
        );
        let _ = writeln!(s, "elapsed       {:.3} s", self.elapsed.as_secs_f64());
        let _ = writeln!(
            s,
            "throughput    {:.1} instances/s, {:.2} MB/s",
            self.instances_per_sec(),
            self.mb_per_sec()
        );
        if self.latencies_us.is_empty() {
            let _ = writeln!(s, "latency       n/a (no response received)");
        } else {
            let _ = writeln!(
                s,
                "latency       p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (last byte written to response)",
                ms(self.latency_us(0.50)),
                ms(self.latency_us(0.99)),
                ms(self.latencies_us.last().copied().unwrap_or(0))
            );
        }
        let _ = write!(
            s,
            "load CPU      {:.3} s (user {:.3}, sys {:.3})",
            self.cpu.total().as_secs_f64(),
            self.cpu.user.as_secs_f64(),
            self.cpu.system.as_secs_f64()
        );
        if self.sent == 0 {
            let _ = writeln!(s, ", n/a per instance (none sent)");
        } else {
            let _ = writeln!(
                s,
                ", {:.1} us per instance (user {:.1}, sys {:.1})",
                self.cpu_us_per_instance(),
                per_instance_us(self.cpu.user, self.sent),
                per_instance_us(self.cpu.system, self.sent)
            );
        }
        for e in &self.association_errors {
            let _ = writeln!(s, "error         {e}");
        }
        for f in &self.failure_samples {
            let _ = writeln!(s, "failure       {f}");
        }
        s
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        // Null when nothing was sent, like the "n/a" of the text output.
        let cpu_us_per_instance = (self.sent > 0).then(|| self.cpu_us_per_instance());
        serde_json::json!({
            "ok": self.ok(),
            "host": self.host,
            "port": self.port,
            "called_ae": self.called_ae,
            "associations": self.associations_requested,
            "associations_established": self.associations_established,
            "templates": self.templates,
            "studies": self.studies,
            "instances": self.instances_requested,
            "sent": self.sent,
            "not_sent": self.instances_requested.saturating_sub(self.sent),
            "successes": self.successes,
            "warnings": self.warnings,
            "failures": self.failures,
            "dataset_bytes": self.dataset_bytes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "instances_per_s": self.instances_per_sec(),
            "mb_per_s": self.mb_per_sec(),
            "latency_us": {
                "p50": self.latency_us(0.50),
                "p99": self.latency_us(0.99),
                "max": self.latencies_us.last().copied().unwrap_or(0),
                "count": self.latencies_us.len(),
            },
            "cpu_s": self.cpu.total().as_secs_f64(),
            "cpu_user_s": self.cpu.user.as_secs_f64(),
            "cpu_sys_s": self.cpu.system.as_secs_f64(),
            "cpu_us_per_instance": cpu_us_per_instance,
            "association_errors": self.association_errors,
            "failure_samples": self.failure_samples,
        })
        .to_string()
    }
}

fn per_instance_us(d: Duration, instances: u64) -> f64 {
    d.as_secs_f64() * 1e6 / instances.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let r = Report {
            latencies_us: (1..=100).collect(),
            ..Report::default()
        };
        assert_eq!(r.latency_us(0.5), 50);
        assert_eq!(r.latency_us(0.99), 99);
        assert_eq!(r.latency_us(1.0), 100);
        assert_eq!(Report::default().latency_us(0.5), 0);
    }

    #[test]
    fn json_cpu_per_instance_none_sent() {
        let cpu = CpuTime {
            user: Duration::from_micros(60),
            system: Duration::from_micros(26),
        };
        let none_sent = Report {
            cpu,
            ..Report::default()
        };
        let json: serde_json::Value = serde_json::from_str(&none_sent.to_json()).unwrap();
        assert!(json["cpu_us_per_instance"].is_null(), "{json}");
        assert_eq!(json["cpu_s"].as_f64(), Some(0.000086), "{json}");

        let two_sent = Report {
            cpu,
            sent: 2,
            ..Report::default()
        };
        let json: serde_json::Value = serde_json::from_str(&two_sent.to_json()).unwrap();
        assert_eq!(json["cpu_us_per_instance"].as_f64(), Some(43.0), "{json}");
    }

    #[test]
    fn json_escapes_strings() {
        let report = Report {
            association_errors: vec!["a\"b\\c\n\u{1}".to_owned()],
            ..Report::default()
        };
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["association_errors"][0], "a\"b\\c\n\u{1}");
    }
}
