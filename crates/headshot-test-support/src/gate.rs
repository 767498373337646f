//! A gate a test opens to let held model calls proceed.

use std::sync::{Arc, Condvar, Mutex};

#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn closed() -> Self {
        Gate::default()
    }

    pub fn open(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Blocks the calling (model) thread until the gate is open.
    pub fn wait(&self) {
        let (lock, cv) = &*self.0;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }
}

/// Lets a scripted generator's denoising steps through as the test allows, and tells the test
/// how many are done, so it can look at a job between two steps.
#[derive(Clone, Default)]
pub struct StepGate(Arc<(Mutex<StepCount>, Condvar)>);

#[derive(Default)]
struct StepCount {
    allowed: usize,
    entered: usize,
    done: usize,
}

/// A guard against a test hanging forever, never a timing assertion.
const STEP_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

impl StepGate {
    /// No step may start until [`StepGate::allow`].
    pub fn closed() -> Self {
        StepGate::default()
    }

    /// Every step goes through at once (steps are still reported).
    pub fn open() -> Self {
        let gate = StepGate::default();
        gate.allow(usize::MAX / 2);
        gate
    }

    /// Lets `n` more steps start.
    pub fn allow(&self, n: usize) {
        let (lock, cv) = &*self.0;
        let mut count = lock.lock().unwrap();
        count.allowed = count.allowed.saturating_add(n);
        cv.notify_all();
    }

    /// Blocks until `n` steps in all are done (reported to the observer); panics after a
    /// minute so a broken test fails instead of hanging.
    pub fn wait_done(&self, n: usize) {
        let (lock, cv) = &*self.0;
        let count = lock.lock().unwrap();
        let (count, timeout) = cv
            .wait_timeout_while(count, STEP_GUARD, |c| c.done < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "only {} of {n} steps were done",
            count.done
        );
    }

    /// Steps done so far.
    pub fn done(&self) -> usize {
        self.0 .0.lock().unwrap().done
    }

    /// Waits until the next step may start (the generator's side).
    pub(crate) fn enter(&self) {
        let (lock, cv) = &*self.0;
        let mut count = lock.lock().unwrap();
        while count.entered >= count.allowed {
            count = cv.wait(count).unwrap();
        }
        count.entered += 1;
    }

    /// A step is done (the generator's side, after telling the observer).
    pub(crate) fn finish(&self) {
        let (lock, cv) = &*self.0;
        lock.lock().unwrap().done += 1;
        cv.notify_all();
    }
}
