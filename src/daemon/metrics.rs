//! `cmkfs metrics`: a mounted volume's state and counters in the Prometheus text exposition
//! format (version 0.0.4), for a node_exporter textfile collector, a cron job or a scrape
//! through `cmkfs metrics MOUNTPOINT`. Rendering is pure; the daemon gathers a
//! [`Metrics`] value from the gate, the key check loop and the data path.

use std::fmt::Write;

/// Upper bounds (seconds) of the key check latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A latency histogram with [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each bucket's bound (not cumulative).
    pub counts: [u64; LATENCY_BUCKETS.len()],
    /// Sum of all observations, in seconds.
    pub sum: f64,
    /// Number of observations (also those above the last bound).
    pub count: u64,
}

impl Histogram {
    /// Records one observation of `secs` seconds.
    pub fn observe(&mut self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Everything `cmkfs metrics` reports.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Volume id (a label of `cmkfs_volume_info`).
    pub volume_id: String,
    /// Mountpoint (a label of `cmkfs_volume_info`).
    pub mountpoint: String,
    /// Format version of the volume.
    pub format_version: u32,
    /// True while Available.
    pub available: bool,
    /// When the state last changed, Unix seconds.
    pub state_since: f64,
    /// State changes since the mount.
    pub state_changes: u64,
    /// Operations refused with EACCES since the mount.
    pub refused_total: u64,
    /// Last successful key check, Unix seconds.
    pub last_check_ok: Option<f64>,
    /// Key checks that succeeded / failed since the mount.
    pub checks_ok: u64,
    /// See `checks_ok`.
    pub checks_failed: u64,
    /// Latency of key checks (provider unwraps).
    pub check_latency: Histogram,
    /// Seconds of unreachable-provider grace left, while the provider is unreachable.
    pub grace_remaining: Option<u64>,
    /// Plaintext bytes read.
    pub bytes_read: u64,
    /// Plaintext bytes written.
    pub bytes_written: u64,
    /// EIO answers by cause: `(cause, count)`.
    pub eio: Vec<(&'static str, u64)>,
    /// Files open now.
    pub open_files: u64,
    /// Resident set size of the daemon, bytes.
    pub rss_bytes: u64,
}

/// A label value, escaped as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Renders `m` as Prometheus text.
pub fn render(m: &Metrics) -> String {
    let mut o = String::new();
    head(&mut o, "cmkfs_volume_info", "gauge", "The mounted volume (always 1).");
    let _ = writeln!(
        o,
        "cmkfs_volume_info{{volume_id=\"{}\",mountpoint=\"{}\",format=\"{}\"}} 1",
        label(&m.volume_id),
        label(&m.mountpoint),
        m.format_version
    );
    head(
        &mut o,
        "cmkfs_state",
        "gauge",
        "1 for the state the volume is in, 0 for the other.",
    );
    for (s, on) in [("Available", m.available), ("Inaccessible", !m.available)] {
        let _ = writeln!(o, "cmkfs_state{{state=\"{s}\"}} {}", u8::from(on));
    }
    one(
        &mut o,
        "cmkfs_state_since_seconds",
        "gauge",
        "When the state last changed (Unix time).",
        m.state_since,
    );
    one(
        &mut o,
        "cmkfs_state_changes_total",
        "counter",
        "State changes since the mount.",
        m.state_changes,
    );
    one(
        &mut o,
        "cmkfs_refused_operations_total",
        "counter",
        "Operations refused with EACCES since the mount.",
        m.refused_total,
    );
    if let Some(t) = m.last_check_ok {
        one(
            &mut o,
            "cmkfs_last_check_success_seconds",
            "gauge",
            "Last successful key check (Unix time).",
            t,
        );
    }
    head(
        &mut o,
        "cmkfs_checks_total",
        "counter",
        "Key checks since the mount, by outcome.",
    );
    let _ = writeln!(o, "cmkfs_checks_total{{outcome=\"ok\"}} {}", m.checks_ok);
    let _ = writeln!(o, "cmkfs_checks_total{{outcome=\"failed\"}} {}", m.checks_failed);
    head(
        &mut o,
        "cmkfs_check_duration_seconds",
        "histogram",
        "Latency of key checks (one unwrap by the key provider).",
    );
    let mut cum = 0;
    for (b, c) in LATENCY_BUCKETS.iter().zip(m.check_latency.counts) {
        cum += c;
        let _ = writeln!(o, "cmkfs_check_duration_seconds_bucket{{le=\"{b}\"}} {cum}");
    }
    let h = &m.check_latency;
    let _ = writeln!(o, "cmkfs_check_duration_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(o, "cmkfs_check_duration_seconds_sum {}", h.sum);
    let _ = writeln!(o, "cmkfs_check_duration_seconds_count {}", h.count);
    one(
        &mut o,
        "cmkfs_unreachable_grace_remaining_seconds",
        "gauge",
        "Grace left while the key provider is unreachable (-1 when it is reachable).",
        m.grace_remaining.map_or(-1, |g| g as i64),
    );
    one(
        &mut o,
        "cmkfs_read_bytes_total",
        "counter",
        "Plaintext bytes read.",
        m.bytes_read,
    );
    one(
        &mut o,
        "cmkfs_written_bytes_total",
        "counter",
        "Plaintext bytes written.",
        m.bytes_written,
    );
    head(
        &mut o,
        "cmkfs_eio_total",
        "counter",
        "Reads and writes answered EIO, by cause.",
    );
    for (cause, n) in &m.eio {
        let _ = writeln!(o, "cmkfs_eio_total{{cause=\"{cause}\"}} {n}");
    }
    one(
        &mut o,
        "cmkfs_open_files",
        "gauge",
        "Files open through the mount.",
        m.open_files,
    );
    one(
        &mut o,
        "cmkfs_daemon_resident_bytes",
        "gauge",
        "Resident memory of the mount daemon.",
        m.rss_bytes,
    );
    o
}

/// This process's resident set size in bytes (`VmRSS` of /proc/self/status), 0 if unknown.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let kb = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
            kb.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_text() {
        let mut h = Histogram::default();
        for s in [0.001, 0.004, 0.2, 40.0] {
            h.observe(s);
        }
        assert_eq!((h.counts[0], h.counts[5], h.count), (2, 1, 4));
        let m = Metrics {
            volume_id: "v\"1".into(),
            mountpoint: "/mnt/a b".into(),
            format_version: 2,
            available: false,
            check_latency: h,
            eio: vec![("block_auth", 3)],
            ..Default::default()
        };
        let t = render(&m);
        assert!(t.contains("cmkfs_state{state=\"Inaccessible\"} 1"), "{t}");
        assert!(t.contains("cmkfs_state{state=\"Available\"} 0"), "{t}");
        assert!(t.contains("volume_id=\"v\\\"1\""), "{t}");
        assert!(t.contains("cmkfs_check_duration_seconds_bucket{le=\"0.005\"} 2"), "{t}");
        assert!(t.contains("cmkfs_check_duration_seconds_bucket{le=\"30\"} 3"), "{t}");
        assert!(t.contains("cmkfs_check_duration_seconds_bucket{le=\"+Inf\"} 4"), "{t}");
        assert!(t.contains("cmkfs_eio_total{cause=\"block_auth\"} 3"), "{t}");
        assert!(t.contains("cmkfs_unreachable_grace_remaining_seconds -1"), "{t}");
        assert!(rss_bytes() > 0);
    }
}
