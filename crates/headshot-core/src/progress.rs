//! Where an admitted job is: waiting for a device, or the denoising step it reached. The
//! worker knows it for its own jobs; past one machine the worker running a job reports it
//! through the shared queue, so any node's `fetch` can answer it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where an admitted job is, with the estimated time until it is done.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Progress {
    /// Not yet on a device: `position` jobs (0-based) will start before it.
    Waiting { position: usize, eta: Duration },
    /// On a device: `step` of `total` denoising steps done (0 before the first).
    Running {
        step: usize,
        total: usize,
        eta: Duration,
    },
}

impl Progress {
    /// Estimated time from now until the job is done.
    pub fn eta(&self) -> Duration {
        match *self {
            Progress::Waiting { eta, .. } | Progress::Running { eta, .. } => eta,
        }
    }

    /// The same report `elapsed` later: its ETA counted down (never below zero).
    pub fn aged(self, elapsed: Duration) -> Progress {
        match self {
            Progress::Waiting { position, eta } => Progress::Waiting {
                position,
                eta: eta.saturating_sub(elapsed),
            },
            Progress::Running { step, total, eta } => Progress::Running {
                step,
                total,
                eta: eta.saturating_sub(elapsed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aging_counts_the_eta_down_to_zero_and_keeps_the_rest() {
        let running = Progress::Running {
            step: 3,
            total: 21,
            eta: Duration::from_secs(5),
        };
        assert_eq!(
            running.aged(Duration::from_secs(2)),
            Progress::Running {
                step: 3,
                total: 21,
                eta: Duration::from_secs(3)
            }
        );
        let waiting = Progress::Waiting {
            position: 1,
            eta: Duration::from_secs(1),
        };
        assert_eq!(
            waiting.aged(Duration::from_secs(9)),
            Progress::Waiting {
                position: 1,
                eta: Duration::ZERO
            }
        );
    }

    #[test]
    fn a_report_round_trips_through_json() {
        let running = Progress::Running {
            step: 3,
            total: 21,
            eta: Duration::from_millis(1500),
        };
        let text = serde_json::to_string(&running).unwrap();
        assert!(text.contains("\"state\":\"running\""), "{text}");
        assert_eq!(serde_json::from_str::<Progress>(&text).unwrap(), running);
    }
}
