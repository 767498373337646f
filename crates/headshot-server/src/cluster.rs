//! Past one machine: the node's role and the shared services behind `--redis-url`.
//!
//! The single binary (`--role all`, no `--redis-url`) keeps its in-process queue, embedded job
//! store and local disk. With `--redis-url`, job records and the job queue live in Redis
//! (Streams with one consumer group), so any number of API nodes (`--role api`: admit, persist,
//! enqueue, answer fetches) and workers (`--role worker`: claim, generate, store, acknowledge)
//! share them; outputs then belong in a shared store too (`--output-store s3://...`).

use std::time::Duration;

/// What this process does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Takes requests and generates (the single-binary default).
    #[default]
    All,
    /// Takes requests and puts jobs on the shared queue; loads no models.
    Api,
    /// Generates the jobs of the shared queue; submits are refused here.
    Worker,
}

impl Role {
    /// Admits new jobs.
    pub fn takes_submits(self) -> bool {
        self != Role::Worker
    }

    /// Loads models and generates.
    pub fn generates(self) -> bool {
        self != Role::Api
    }
}

/// The cluster flags, flattened into [`crate::Config`].
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// What this process does: `all` (take requests and generate), `api` (take requests,
    /// queue jobs for workers; needs --redis-url) or `worker` (generate queued jobs; needs
    /// --redis-url).
    #[arg(long, env = "HEADSHOT_ROLE", value_enum, default_value = "all")]
    pub role: Role,

    /// Redis for job records and the shared job queue (`redis://host:6379/0`); without it the
    /// embedded store and in-process queue serve this process alone.
    #[arg(long, env = "HEADSHOT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// The name of this model set's queue (one stream per model set): workers generate the jobs
    /// of the set they loaded, API nodes queue for it.
    #[arg(long, env = "HEADSHOT_MODEL_SET_NAME", default_value = "default")]
    pub model_set_name: String,

    /// How long a worker's claim on a job lasts without being renewed; it renews every third
    /// of this while the job runs, so only a worker that died (or hung) loses its jobs.
    #[arg(long, env = "HEADSHOT_CLAIM_TIMEOUT_SECS", default_value_t = 60.0)]
    pub claim_timeout_secs: f64,

    /// Deliveries of one job before it is given up as `failed` (a job that kills its worker
    /// every time must not loop forever).
    #[arg(long, env = "HEADSHOT_MAX_DELIVERIES", default_value_t = 3)]
    pub max_deliveries: u64,

    /// Jobs a worker claims beyond one per device: enough to batch compatible jobs and never
    /// leave a device idle, few enough to leave the rest of the queue to other workers.
    #[arg(long, env = "HEADSHOT_WORKER_PREFETCH", default_value_t = 2)]
    pub worker_prefetch: usize,
}

impl ClusterArgs {
    /// Why these flags cannot work together, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.role != Role::All && self.redis_url.is_none() {
            return Err(format!(
                "--role {} needs --redis-url: API nodes and workers meet through the shared queue",
                match self.role {
                    Role::Api => "api",
                    _ => "worker",
                }
            ));
        }
        if !(self.claim_timeout_secs.is_finite() && self.claim_timeout_secs >= 1.0) {
            return Err("--claim-timeout-secs must be at least 1".into());
        }
        if self.max_deliveries == 0 {
            return Err("--max-deliveries must be at least 1".into());
        }
        Ok(())
    }

    pub fn claim_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.claim_timeout_secs.max(1.0))
    }

    pub fn is_shared(&self) -> bool {
        self.redis_url.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    fn parse(args: &[&str]) -> ClusterArgs {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).expect("flags parse").cluster
    }

    #[test]
    fn the_default_is_the_single_binary() {
        let flags = parse(&[]);
        assert_eq!(flags.role, Role::All);
        assert!(!flags.is_shared());
        assert!(flags.check().is_ok());
    }

    #[test]
    fn api_and_worker_roles_need_the_shared_queue() {
        let err = parse(&["--role", "api"]).check().unwrap_err();
        assert!(err.contains("--redis-url"), "{err}");
        let err = parse(&["--role", "worker"]).check().unwrap_err();
        assert!(err.contains("--role worker"), "{err}");
        assert!(
            parse(&["--role", "worker", "--redis-url", "redis://127.0.0.1:1/"])
                .check()
                .is_ok()
        );
        assert!(!Role::Api.generates() && Role::Api.takes_submits());
        assert!(Role::Worker.generates() && !Role::Worker.takes_submits());
    }

    #[test]
    fn claims_and_deliveries_are_bounded() {
        let url = "--redis-url=redis://127.0.0.1:1/";
        assert!(parse(&[url, "--claim-timeout-secs", "0.1"])
            .check()
            .is_err());
        assert!(parse(&[url, "--max-deliveries", "0"]).check().is_err());
    }
}
