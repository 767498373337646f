//! Host facts for `system_details`, read from /proc where there is one (Linux); elsewhere the
//! fields are `null` rather than guessed.

use serde::Serialize;

/// Memory of the host and of this process, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MemoryFacts {
    /// `MemTotal` of /proc/meminfo.
    pub host_total_bytes: Option<u64>,
    /// `MemAvailable` of /proc/meminfo.
    pub host_available_bytes: Option<u64>,
    /// Resident set size of this process (`VmRSS` of /proc/self/status).
    pub process_resident_bytes: Option<u64>,
}

impl MemoryFacts {
    pub fn read() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        MemoryFacts {
            host_total_bytes: kib_field(&meminfo, "MemTotal:"),
            host_available_bytes: kib_field(&meminfo, "MemAvailable:"),
            process_resident_bytes: kib_field(&status, "VmRSS:"),
        }
    }
}

/// A `Name:   123 kB` line of a /proc file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `3d 4h 5m 6s`, the way the hosted service words uptime.
pub fn uptime_text(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    format!("{d}d {h}h {m}m {s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read_in_bytes() {
        let meminfo = "MemTotal:       16316412 kB\nMemFree:  1 kB\nMemAvailable:   8000000 kB\n";
        assert_eq!(kib_field(meminfo, "MemTotal:"), Some(16_316_412 * 1024));
        assert_eq!(kib_field(meminfo, "MemAvailable:"), Some(8_000_000 * 1024));
        assert_eq!(kib_field(meminfo, "SwapTotal:"), None);
        assert_eq!(uptime_text(90_061), "1d 1h 1m 1s");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory() {
        let facts = MemoryFacts::read();
        assert!(facts.process_resident_bytes.unwrap() > 0);
        assert!(facts.host_total_bytes.unwrap() >= facts.host_available_bytes.unwrap());
    }
}
