//! A moving average of recent per-job times, for `eta` and `retry_after`.

use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct JobTimes {
    recent: VecDeque<Duration>,
    window: usize,
    initial: Duration,
}

impl JobTimes {
    pub(crate) fn new(window: usize, initial: Duration) -> Self {
        JobTimes {
            recent: VecDeque::with_capacity(window.max(1)),
            window: window.max(1),
            initial,
        }
    }

    /// A batch of `jobs` took `elapsed`: each job cost its share of the device time.
    pub(crate) fn record_batch(&mut self, elapsed: Duration, jobs: usize) {
        let per_job = elapsed / jobs.max(1) as u32;
        for _ in 0..jobs.max(1) {
            if self.recent.len() == self.window {
                self.recent.pop_front();
            }
            self.recent.push_back(per_job);
        }
    }

    /// The average per-job time, or the configured guess before anything finished.
    pub(crate) fn per_job(&self) -> Duration {
        if self.recent.is_empty() {
            return self.initial;
        }
        self.recent.iter().sum::<Duration>() / self.recent.len() as u32
    }

    /// Expected time until a job with `ahead` jobs before it (running or waiting) is done,
    /// with `devices` threads sharing the queue.
    pub(crate) fn eta(&self, ahead: usize, devices: usize) -> Duration {
        // per_job * (ahead / devices + 1), in integers while they fit so the ETA of an empty
        // queue is exactly the average.
        let devices = devices.max(1);
        let per_job = self.per_job();
        match (u32::try_from(ahead + devices), u32::try_from(devices)) {
            (Ok(rounds), Ok(devices)) => per_job.saturating_mul(rounds) / devices,
            _ => per_job.mul_f64(ahead as f64 / devices as f64 + 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_guess_until_measured() {
        let t = JobTimes::new(4, Duration::from_secs(10));
        assert_eq!(t.per_job(), Duration::from_secs(10));
        assert_eq!(t.eta(2, 1), Duration::from_secs(30));
        assert_eq!(t.eta(2, 2), Duration::from_secs(20));
    }

    #[test]
    fn moving_average_over_window() {
        let mut t = JobTimes::new(2, Duration::from_secs(10));
        t.record_batch(Duration::from_secs(4), 1);
        assert_eq!(t.per_job(), Duration::from_secs(4));
        // A batch of two jobs in 6 s: 3 s each; the window keeps the last two samples.
        t.record_batch(Duration::from_secs(6), 2);
        assert_eq!(t.per_job(), Duration::from_secs(3));
        t.record_batch(Duration::from_secs(5), 1);
        assert_eq!(t.per_job(), Duration::from_secs(4));
        assert_eq!(t.eta(0, 1), Duration::from_secs(4));
    }
}
