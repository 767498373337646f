//! How a batch is taken from the device queue: jobs with equal `batch_key` (the job's own
//! method in headshot-core, the same one the pipeline batches by), oldest first.

use std::collections::VecDeque;

use headshot_core::{BatchKey, JobSettings};

/// Takes the oldest job and then, in queue order, every later job with the same [`BatchKey`]
/// while the total image count stays within `max_images`. The oldest job always goes (even if
/// it alone exceeds the limit), so every job eventually leads a batch and nothing starves;
/// incompatible jobs keep their place.
pub(crate) fn take_batch<T>(
    queue: &mut VecDeque<T>,
    max_images: usize,
    job_of: impl Fn(&T) -> &JobSettings,
) -> Vec<T> {
    let Some(head) = queue.pop_front() else {
        return Vec::new();
    };
    let key = job_of(&head).batch_key();
    let mut images = job_of(&head).images();
    let mut batch = vec![head];
    extend_batch(queue, &mut batch, &mut images, &key, max_images, &job_of);
    batch
}

/// Adds compatible queued jobs to `batch` (used again after waiting for more to arrive).
pub(crate) fn extend_batch<T>(
    queue: &mut VecDeque<T>,
    batch: &mut Vec<T>,
    images: &mut usize,
    key: &BatchKey,
    max_images: usize,
    job_of: &impl Fn(&T) -> &JobSettings,
) {
    let mut i = 0;
    while i < queue.len() && *images < max_images {
        let job = job_of(&queue[i]);
        if job.batch_key() == *key && *images + job.images() <= max_images {
            *images += job.images();
            if let Some(taken) = queue.remove(i) {
                batch.push(taken);
            }
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seed: u64, width: u32, samples: u32, guidance: f64) -> JobSettings {
        JobSettings {
            width,
            samples,
            guidance_scale: guidance,
            ..headshot_test_support::settings(seed)
        }
    }

    fn seeds(jobs: &[JobSettings]) -> Vec<u64> {
        jobs.iter().map(|j| j.seed).collect()
    }

    #[test]
    fn groups_compatible_jobs_in_order_up_to_the_image_limit() {
        let mut q: VecDeque<_> = [
            job(1, 512, 1, 7.5),
            job(2, 768, 1, 7.5),
            job(3, 512, 2, 5.0),
            job(4, 512, 1, 1.0),
            job(5, 512, 1, 3.0),
            job(6, 512, 1, 3.0),
        ]
        .into();
        let b = take_batch(&mut q, 4, |j| j);
        // 1 + 3 (two images) + 5 = 4 images; 6 would exceed; 2 (size) and 4 (no CFG) differ.
        assert_eq!(seeds(&b), [1, 3, 5]);
        assert_eq!(seeds(&q.iter().cloned().collect::<Vec<_>>()), [2, 4, 6]);
        assert_eq!(seeds(&take_batch(&mut q, 4, |j| j)), [2]);
        assert_eq!(seeds(&take_batch(&mut q, 4, |j| j)), [4]);
        assert_eq!(seeds(&take_batch(&mut q, 4, |j| j)), [6]);
        assert!(take_batch(&mut q, 4, |j| j).is_empty());
    }

    #[test]
    fn limit_of_one_keeps_fifo_order() {
        let mut q: VecDeque<_> = (0..5).map(|s| job(s, 512, 1, 7.5)).collect();
        let order: Vec<u64> = (0..5)
            .flat_map(|_| seeds(&take_batch(&mut q, 1, |j| j)))
            .collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn an_oversized_head_still_runs_alone() {
        let mut q: VecDeque<_> = [job(1, 512, 2, 7.5), job(2, 512, 1, 7.5)].into();
        assert_eq!(seeds(&take_batch(&mut q, 1, |j| j)), [1]);
        assert_eq!(seeds(&take_batch(&mut q, 1, |j| j)), [2]);
    }
}
