//! `headshot_core::Generator` for the pipeline: face analysis per job, then compatible jobs
//! rendered together in UNet batches of at most `max_batch_images` images.

use headshot_core::{GenerationError, GenerationJob, GenerationOutput, Generator};

use crate::render::{FaceInput, RenderRequest};
use crate::Pipeline;

impl Pipeline {
    /// Groups job indices that may share a UNet batch (same `batch_key`), in input order, each
    /// group holding at most `max_images` images.
    fn plan_batches(requests: &[(usize, &RenderRequest)], max_images: usize) -> Vec<Vec<usize>> {
        let mut open: Vec<(super::render::BatchKey, Vec<usize>, usize)> = Vec::new();
        let mut done = Vec::new();
        for &(index, req) in requests {
            let key = req.batch_key();
            let images = req.samples as usize;
            match open
                .iter_mut()
                .find(|(k, _, n)| *k == key && n + images <= max_images)
            {
                Some((_, members, n)) => {
                    members.push(index);
                    *n += images;
                }
                None => open.push((key, vec![index], images)),
            }
            // Close groups that are full so later jobs start new ones.
            let (full, rest): (Vec<_>, Vec<_>) =
                open.into_iter().partition(|(_, _, n)| *n >= max_images);
            done.extend(full.into_iter().map(|(_, members, _)| members));
            open = rest;
        }
        done.extend(open.into_iter().map(|(_, members, _)| members));
        done.sort_by_key(|members| members[0]);
        done
    }
}

impl Generator for Pipeline {
    fn generate(&self, job: &GenerationJob) -> Result<GenerationOutput, GenerationError> {
        self.generate_batch(std::slice::from_ref(job))
            .pop()
            .unwrap_or_else(|| Err(GenerationError::Internal("no result for the job".into())))
    }

    fn generate_batch(
        &self,
        jobs: &[GenerationJob],
    ) -> Vec<Result<GenerationOutput, GenerationError>> {
        let mut results: Vec<Option<Result<GenerationOutput, GenerationError>>> =
            vec![None; jobs.len()];
        let mut ready: Vec<(usize, RenderRequest, FaceInput)> = Vec::new();
        for (index, job) in jobs.iter().enumerate() {
            let request = RenderRequest::from_job(job);
            let prepared = self
                .validate(&request)
                .and_then(|()| self.analyze_face(&job.face_image));
            match prepared {
                Ok(face) => ready.push((index, request, face)),
                Err(err) => results[index] = Some(Err(err.into())),
            }
        }

        let requests: Vec<(usize, &RenderRequest)> =
            ready.iter().map(|(i, r, _)| (*i, r)).collect();
        for group in Self::plan_batches(&requests, self.limits.max_batch_images.max(1)) {
            let members: Vec<&(usize, RenderRequest, FaceInput)> = group
                .iter()
                .filter_map(|index| ready.iter().find(|(i, _, _)| i == index))
                .collect();
            let batch: Vec<(&RenderRequest, &FaceInput)> =
                members.iter().map(|(_, r, f)| (r, f)).collect();
            match self.render_batch(&batch) {
                Ok(outputs) => {
                    for ((index, _, _), output) in members.iter().zip(outputs) {
                        results[*index] = Some(Ok(GenerationOutput {
                            images: output.images,
                        }));
                    }
                }
                Err(err) => {
                    tracing::error!(jobs = members.len(), error = %err, "batch failed");
                    let err: GenerationError = err.into();
                    for (index, _, _) in &members {
                        results[*index] = Some(Err(err.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(GenerationError::Internal("job was not scheduled".into())))
            })
            .collect()
    }

    fn max_batch_images(&self) -> usize {
        self.limits.max_batch_images
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(width: u32, steps: u32, guidance: f64, samples: u32) -> RenderRequest {
        RenderRequest {
            prompt: String::new(),
            negative_prompt: String::new(),
            width,
            height: 512,
            steps,
            guidance_scale: guidance,
            s_scale: 1.0,
            samples,
            seed: 0,
            safety_checker: None,
            initial_latents: None,
        }
    }

    #[test]
    fn batches_only_compatible_jobs_up_to_the_limit() {
        let reqs = [
            req(512, 21, 7.5, 1), // 0
            req(512, 21, 5.0, 2), // 1: same key as 0 (CFG on), different guidance
            req(512, 21, 1.0, 1), // 2: no CFG -> own group
            req(768, 21, 7.5, 1), // 3: other size
            req(512, 30, 7.5, 1), // 4: other steps
            req(512, 21, 7.5, 2), // 5: would make group {0,1} 5 images > 4
            req(512, 21, 1.0, 1), // 6: joins 2
        ];
        let list: Vec<(usize, &RenderRequest)> = reqs.iter().enumerate().collect();
        let groups = Pipeline::plan_batches(&list, 4);
        assert_eq!(
            groups,
            vec![vec![0, 1], vec![2, 6], vec![3], vec![4], vec![5]]
        );
        let images = |g: &Vec<usize>| g.iter().map(|&i| reqs[i].samples).sum::<u32>();
        assert!(groups.iter().all(|g| images(g) <= 4));
    }
}
