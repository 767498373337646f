//! Which queued jobs may share one generator call, and how a batch is taken from the queue.

use std::collections::VecDeque;

use headshot_core::GenerationJob;

/// Jobs with equal keys can run in one UNet batch: same latent size, same number of denoising
/// steps, and either all with classifier-free guidance (scale > 1) or all without it (the
/// unconditional branch doubles the batch, so it cannot be mixed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub width: u32,
    pub height: u32,
    pub num_inference_steps: u32,
    pub guided: bool,
}

impl BatchKey {
    pub fn of(job: &GenerationJob) -> Self {
        BatchKey {
            width: job.width,
            height: job.height,
            num_inference_steps: job.num_inference_steps,
            guided: job.guidance_scale > 1.0,
        }
    }
}

/// Images one job adds to a batch (at least one, so an odd `samples: 0` cannot starve others).
pub(crate) fn images_of(job: &GenerationJob) -> usize {
    (job.samples as usize).max(1)
}

/// Takes the oldest job and then, in queue order, every later job with the same [`BatchKey`]
/// while the total image count stays within `max_images`. The oldest job always goes (even if
/// it alone exceeds the limit), so every job eventually leads a batch and nothing starves;
/// incompatible jobs keep their place.
pub(crate) fn take_batch<T>(
    queue: &mut VecDeque<T>,
    max_images: usize,
    job_of: impl Fn(&T) -> &GenerationJob,
) -> Vec<T> {
    let Some(head) = queue.pop_front() else {
        return Vec::new();
    };
    let key = BatchKey::of(job_of(&head));
    let mut images = images_of(job_of(&head));
    let mut batch = vec![head];
    extend_batch(queue, &mut batch, &mut images, key, max_images, &job_of);
    batch
}

/// Adds compatible queued jobs to `batch` (used again after waiting for more to arrive).
pub(crate) fn extend_batch<T>(
    queue: &mut VecDeque<T>,
    batch: &mut Vec<T>,
    images: &mut usize,
    key: BatchKey,
    max_images: usize,
    job_of: &impl Fn(&T) -> &GenerationJob,
) {
    let mut i = 0;
    while i < queue.len() && *images < max_images {
        let job = job_of(&queue[i]);
        if BatchKey::of(job) == key && *images + images_of(job) <= max_images {
            *images += images_of(job);
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

    fn job(seed: u64, width: u32, samples: u32, guidance: f64) -> GenerationJob {
        GenerationJob {
            prompt: "p".into(),
            negative_prompt: String::new(),
            face_image: Vec::new(),
            width,
            height: 512,
            num_inference_steps: 21,
            guidance_scale: guidance,
            s_scale: 1.0,
            samples,
            seed,
            safety_checker: None,
        }
    }

    fn seeds(jobs: &[GenerationJob]) -> Vec<u64> {
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
