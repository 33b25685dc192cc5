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

    /// Formats `cpu_us_per_instance` as a JSON number, or as `null` when no
    /// instance was sent, like the "n/a" of the text output.
    fn cpu_us_per_instance_json(&self) -> String {
        if self.sent == 0 {
            "null".to_string()
        } else {
            format!("{:.3}", self.cpu_us_per_instance())
        }
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
        let strings = |v: &[String]| {
            v.iter()
                .map(|s| json_string(s))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            concat!(
                "{{\"ok\":{},\"host\":{},\"port\":{},\"called_ae\":{},",
                "\"associations\":{},\"associations_established\":{},\"templates\":{},\"studies\":{},",
                "\"instances\":{},\"sent\":{},\"not_sent\":{},\"successes\":{},\"warnings\":{},\"failures\":{},",
                "\"dataset_bytes\":{},\"elapsed_s\":{:.6},\"instances_per_s\":{:.3},\"mb_per_s\":{:.3},",
                "\"latency_us\":{{\"p50\":{},\"p99\":{},\"max\":{},\"count\":{}}},",
                "\"cpu_s\":{:.6},\"cpu_user_s\":{:.6},\"cpu_sys_s\":{:.6},\"cpu_us_per_instance\":{},",
                "\"association_errors\":[{}],\"failure_samples\":[{}]}}"
            ),
            self.ok(),
            json_string(&self.host),
            self.port,
            json_string(&self.called_ae),
            self.associations_requested,
            self.associations_established,
            self.templates,
            self.studies,
            self.instances_requested,
            self.sent,
            self.instances_requested.saturating_sub(self.sent),
            self.successes,
            self.warnings,
            self.failures,
            self.dataset_bytes,
            self.elapsed.as_secs_f64(),
            self.instances_per_sec(),
            self.mb_per_sec(),
            self.latency_us(0.50),
            self.latency_us(0.99),
            self.latencies_us.last().copied().unwrap_or(0),
            self.latencies_us.len(),
            self.cpu.total().as_secs_f64(),
            self.cpu.user.as_secs_f64(),
            self.cpu.system.as_secs_f64(),
            self.cpu_us_per_instance_json(),
            strings(&self.association_errors),
            strings(&self.failure_samples),
        )
    }
}

fn per_instance_us(d: Duration, instances: u64) -> f64 {
    d.as_secs_f64() * 1e6 / instances.max(1) as f64
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
        let json = none_sent.to_json();
        assert!(json.contains("\"cpu_us_per_instance\":null,"), "{json}");
        assert!(json.contains("\"cpu_s\":0.000086,"), "{json}");

        let two_sent = Report {
            cpu,
            sent: 2,
            ..Report::default()
        };
        let json = two_sent.to_json();
        assert!(json.contains("\"cpu_us_per_instance\":43.000,"), "{json}");
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
