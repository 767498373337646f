//! Time estimates for `eta` and `retry_after` from the work queued, not the job count: a job's
//! work is steps x pixels x samples (a 512x768 job with 50 steps is ~3.6 times a 512x512 one
//! with 21), and each device's rate is a moving average of seconds per unit of work it has
//! measured. Work is counted in reference jobs (512x512, 21 steps, one sample), so
//! `initial_job_estimate` is simply how long such a job is expected to take.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use headshot_core::JobSettings;

/// steps x pixels x samples of the reference job.
const REFERENCE_WORK: f64 = 512.0 * 512.0 * 21.0;

/// A job's work in reference jobs.
pub(crate) fn work_of(job: &JobSettings) -> f64 {
    f64::from(job.num_inference_steps.max(1)) * f64::from(job.width) * f64::from(job.height)
        / REFERENCE_WORK
        * job.images() as f64
}

/// The batch a device is running.
#[derive(Debug)]
struct Running {
    seqs: Vec<u64>,
    work: f64,
    started: Instant,
}

#[derive(Debug)]
pub(crate) struct Estimator {
    initial_secs: f64,
    window: usize,
    /// Per device: recent (seconds, work) of finished batches.
    measured: Vec<VecDeque<(f64, f64)>>,
    running: Vec<Option<Running>>,
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

impl Estimator {
    pub(crate) fn new(devices: usize, window: usize, initial: Duration) -> Self {
        let devices = devices.max(1);
        Estimator {
            initial_secs: initial.as_secs_f64(),
            window: window.max(1),
            measured: (0..devices).map(|_| VecDeque::new()).collect(),
            running: (0..devices).map(|_| None).collect(),
        }
    }

    /// Seconds per reference job on `device`: its own measurements, else the other devices'
    /// average, else the configured guess.
    fn rate(&self, device: usize) -> f64 {
        let own = |samples: &VecDeque<(f64, f64)>| {
            let (s, w) = samples
                .iter()
                .fold((0.0, 0.0), |(s, w), (ds, dw)| (s + ds, w + dw));
            (w > 0.0).then(|| s / w)
        };
        if let Some(rate) = self.measured.get(device).and_then(own) {
            return rate;
        }
        let others: Vec<f64> = self.measured.iter().filter_map(own).collect();
        if others.is_empty() {
            self.initial_secs
        } else {
            others.iter().sum::<f64>() / others.len() as f64
        }
    }

    fn mean_rate(&self) -> f64 {
        let devices = self.measured.len();
        (0..devices).map(|d| self.rate(d)).sum::<f64>() / devices as f64
    }

    /// Reference jobs per second over all devices.
    fn throughput(&self) -> f64 {
        (0..self.measured.len())
            .map(|d| 1.0 / self.rate(d).max(1e-9))
            .sum()
    }

    /// Work the running batches still have, by their elapsed time and their device's rate.
    fn running_work_left(&self, now: Instant) -> f64 {
        self.running
            .iter()
            .enumerate()
            .filter_map(|(d, r)| r.as_ref().map(|r| (d, r)))
            .map(|(d, r)| {
                let done = now.saturating_duration_since(r.started).as_secs_f64() / self.rate(d);
                (r.work - done).max(0.0)
            })
            .sum()
    }

    /// The time one reference job takes (the moving average over devices).
    pub(crate) fn per_job(&self) -> Duration {
        secs(self.mean_rate())
    }

    /// Expected time until a job of `work` is done, with `queued_ahead` work waiting before it
    /// and the running batches finishing first.
    pub(crate) fn eta(&self, queued_ahead: f64, work: f64, now: Instant) -> Duration {
        let ahead = queued_ahead + self.running_work_left(now);
        secs(ahead / self.throughput() + work * self.mean_rate())
    }

    /// When a queue slot is expected to free up: the shortest running batch's estimated time
    /// (or, with none running, that of the job next in line).
    pub(crate) fn retry_after(&self, next_in_line: Option<f64>) -> Duration {
        let running = self
            .running
            .iter()
            .enumerate()
            .filter_map(|(d, r)| r.as_ref().map(|r| r.work * self.rate(d)))
            .reduce(f64::min);
        secs(running.unwrap_or_else(|| next_in_line.unwrap_or(1.0) * self.mean_rate()))
    }

    /// Time left for the running batch holding job `seq`, if one does.
    pub(crate) fn running_eta(&self, seq: u64, now: Instant) -> Option<Duration> {
        self.running.iter().enumerate().find_map(|(d, r)| {
            let r = r.as_ref().filter(|r| r.seqs.contains(&seq))?;
            let elapsed = now.saturating_duration_since(r.started).as_secs_f64();
            Some(secs(r.work * self.rate(d) - elapsed))
        })
    }

    pub(crate) fn started(&mut self, device: usize, seqs: Vec<u64>, work: f64, now: Instant) {
        if let Some(slot) = self.running.get_mut(device) {
            *slot = Some(Running {
                seqs,
                work,
                started: now,
            });
        }
    }

    /// The batch on `device` took `elapsed`: a new measurement of that device's rate.
    pub(crate) fn finished(&mut self, device: usize, elapsed: Duration) {
        let Some(running) = self.running.get_mut(device).and_then(Option::take) else {
            return;
        };
        if running.work <= 0.0 {
            return;
        }
        let samples = &mut self.measured[device];
        if samples.len() == self.window {
            samples.pop_front();
        }
        samples.push_back((elapsed.as_secs_f64(), running.work));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(width: u32, height: u32, steps: u32, samples: u32) -> JobSettings {
        JobSettings {
            width,
            height,
            num_inference_steps: steps,
            samples,
            ..headshot_test_support::settings(1)
        }
    }

    #[test]
    fn work_is_steps_times_pixels_times_samples() {
        assert_eq!(work_of(&job(512, 512, 21, 1)), 1.0);
        assert_eq!(work_of(&job(512, 512, 42, 2)), 4.0);
        assert_eq!(work_of(&job(256, 256, 21, 1)), 0.25);
    }

    #[test]
    fn initial_guess_until_measured_then_the_measured_rate() {
        let mut e = Estimator::new(1, 4, Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(e.per_job(), Duration::from_secs(10));
        assert_eq!(e.eta(0.0, 1.0, now), Duration::from_secs(10));
        // Two reference jobs queued ahead, a quarter-size job: 2 x 10 + 2.5 s.
        assert_eq!(e.eta(2.0, 0.25, now), Duration::from_millis(22_500));
        // A batch of 4 units took 2 s: 0.5 s per reference job from now on.
        e.started(0, vec![1], 4.0, now);
        e.finished(0, Duration::from_secs(2));
        assert_eq!(e.per_job(), Duration::from_millis(500));
        assert_eq!(e.eta(4.0, 1.0, now), Duration::from_millis(2500));
    }

    #[test]
    fn devices_share_the_queue_at_their_own_rates() {
        let mut e = Estimator::new(2, 4, Duration::from_secs(10));
        let now = Instant::now();
        e.started(0, vec![1], 1.0, now);
        e.finished(0, Duration::from_secs(1));
        e.started(1, vec![2], 1.0, now);
        e.finished(1, Duration::from_secs(3));
        // Throughput 1 + 1/3 jobs/s; 4 units ahead take 3 s, then 2 s for this job (mean rate).
        assert_eq!(e.eta(4.0, 1.0, now), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_is_the_shortest_running_batch() {
        let mut e = Estimator::new(2, 4, Duration::from_secs(16));
        let now = Instant::now();
        assert_eq!(e.retry_after(Some(0.5)), Duration::from_secs(8));
        e.started(0, vec![1], 2.0, now);
        e.started(1, vec![2, 3], 1.0, now);
        assert_eq!(e.retry_after(None), Duration::from_secs(16));
        assert!(e.running_eta(3, now).unwrap() <= Duration::from_secs(16));
        assert_eq!(e.running_eta(9, now), None);
    }
}
