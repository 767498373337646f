//! `headshot_core::Generator` for the pipeline: the device stage. Jobs arrive prepared (their
//! faces analysed on the prepare pool); compatible ones share UNet batches of at most
//! `max_batch_images` images.

use candle_core::DeviceLocation;
use headshot_core::{
    error_chain, plan_batches, GenerationError, GenerationOutput, Generator, GeneratorInfo,
    JobLimits, ModelSetState, PreparedJob, StepObserver,
};

use crate::render::RenderOptions;
use crate::Pipeline;

impl Generator for Pipeline {
    fn info(&self) -> GeneratorInfo {
        let (kind, device) = match self.device().location() {
            DeviceLocation::Cpu => ("cpu", "cpu".to_string()),
            DeviceLocation::Cuda { gpu_id } => ("cuda", format!("cuda:{gpu_id}")),
            DeviceLocation::Metal { gpu_id } => ("metal", format!("metal:{gpu_id}")),
        };
        GeneratorInfo {
            device,
            kind: kind.to_string(),
            models: self.model_set().to_string(),
        }
    }

    fn model_sets(&self) -> Vec<ModelSetState> {
        self.model_set_states()
    }

    fn unload_model_sets(&self) -> Vec<String> {
        self.unload_on_demand_sets()
    }

    fn generate(&self, job: &PreparedJob) -> Result<GenerationOutput, GenerationError> {
        self.generate_batch(std::slice::from_ref(job))
            .pop()
            .unwrap_or_else(|| Err(GenerationError::internal("no result for the job")))
    }

    fn generate_batch(
        &self,
        jobs: &[PreparedJob],
    ) -> Vec<Result<GenerationOutput, GenerationError>> {
        self.generate_batch_observed(jobs, &())
    }

    fn generate_batch_observed(
        &self,
        jobs: &[PreparedJob],
        observer: &dyn StepObserver,
    ) -> Vec<Result<GenerationOutput, GenerationError>> {
        let mut results: Vec<Option<Result<GenerationOutput, GenerationError>>> =
            vec![None; jobs.len()];
        // A job the prepare stage would have refused fails alone, not with its batch.
        let limits = self.job_limits();
        let mut valid = Vec::with_capacity(jobs.len());
        for (index, job) in jobs.iter().enumerate() {
            match job.settings.validate(&limits) {
                Ok(()) => valid.push(index),
                Err(err) => results[index] = Some(Err(err)),
            }
        }
        let max_images = self.limits.max_batch_images.max(1);
        for group in plan_batches(valid.iter().map(|&i| &jobs[i].settings), max_images) {
            let group: Vec<usize> = group.into_iter().map(|g| valid[g]).collect();
            let batch: Vec<_> = group
                .iter()
                .map(|&i| (&jobs[i].settings, &jobs[i].face))
                .collect();
            match self.render_batch_observed(&batch, &RenderOptions::default(), observer) {
                Ok(outputs) => {
                    for (&index, output) in group.iter().zip(outputs) {
                        results[index] = Some(Ok(GenerationOutput {
                            images: output.images,
                        }));
                    }
                }
                Err(err @ crate::PipelineError::Cancelled { .. }) => {
                    tracing::info!(jobs = group.len(), error = %err, "batch stopped");
                    for &index in &group {
                        results[index] = Some(Err(GenerationError::Cancelled));
                    }
                }
                Err(err) => {
                    let err: GenerationError = err.into();
                    tracing::error!(jobs = group.len(), error = %error_chain(&err), "batch failed");
                    for &index in &group {
                        results[index] = Some(Err(err.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(GenerationError::internal("job was not scheduled"))))
            .collect()
    }

    fn max_batch_images(&self) -> usize {
        self.limits.max_batch_images
    }

    fn limits(&self) -> JobLimits {
        self.job_limits()
    }
}
