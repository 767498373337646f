//! The shared job queue on Redis Streams: one stream per model set (`{namespace}:stream:{set}`),
//! all workers in one consumer group (`workers`), and a counter of entries added and not yet
//! acknowledged (`{namespace}:backlog`) that admission checks and that every change keeps
//! exact. Each step that must not be split is a Lua script:
//!
//! - enqueue: check the counter against the cap, `XADD`, count it;
//! - reclaim: `XAUTOCLAIM` the entries idle longer than the visibility timeout (their worker
//!   died) and read each one's delivery count from `XPENDING`;
//! - keep-alive: `XCLAIM ... JUSTID` (resets the idle time, not the delivery count), only
//!   while this consumer still owns the entry;
//! - ack: `XACK`, then `XDEL` and uncount it, only the first time;
//! - forget: `XGROUP DELCONSUMER` the consumers with nothing pending that have not been seen
//!   for [`QueueConfig::forget_consumers_after`] (workers that died or were replaced; each
//!   process is a new consumer), so the group does not grow with every restart. In one script,
//!   so a consumer never gets an entry between the check and its removal.
//!
//! New entries are read with `XREADGROUP ... BLOCK`, which a script cannot do.
//!
//! Progress reports of claimed jobs are plain keys (`{namespace}:progress:{id}`) that expire
//! [`PROGRESS_LAPSE`] after being written; a report's age is read from its remaining time to
//! live, so the nodes' clocks never need to agree.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use headshot_core::queue::{Admission, Delivery, JobQueue};
use headshot_core::store::{JobId, StoreError};
use headshot_core::Progress;
use redis::streams::StreamReadReply;
use redis::{Connection, RedisError, RedisResult, Script};

use crate::redis_pool::{RedisConfig, RedisPool};

/// The consumer group every worker of a deployment joins.
const GROUP: &str = "workers";

/// How long a progress report stands: a few of the workers' one-second reports, so a live
/// worker's job always has one and a dead worker's is gone within seconds.
pub const PROGRESS_LAPSE: Duration = Duration::from_secs(5);

/// KEYS: stream, backlog. ARGV: cap, job id. Returns {added (0 or 1), backlog}.
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local backlog = tonumber(redis.call('GET', KEYS[2]) or '0')
if backlog >= tonumber(ARGV[1]) then return {0, backlog} end
redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
return {1, redis.call('INCR', KEYS[2])}
",
    )
});

/// KEYS: stream. ARGV: group, consumer, min idle ms, count.
/// Returns {entry id, job id, delivery count} per reclaimed entry.
static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
for _, entry in ipairs(claimed[2]) do
  if type(entry) == 'table' and type(entry[2]) == 'table' then
    local job = ''
    for i = 1, #entry[2], 2 do
      if entry[2][i] == 'job' then job = entry[2][i + 1] end
    end
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    table.insert(out, {entry[1], job, pending[1][4]})
  end
end
return out
",
    )
});

/// KEYS: stream. ARGV: group, consumer, entry id. Returns 1 if the claim was renewed.
static KEEP_ALIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
",
    )
});

/// KEYS: stream. ARGV: group, this consumer, min idle ms. Returns the names removed.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local field = {}
  for i = 1, #consumer, 2 do field[consumer[i]] = consumer[i + 1] end
  if field['name'] ~= ARGV[2] and tonumber(field['pending']) == 0
      and tonumber(field['idle']) >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], field['name'])
    table.insert(removed, field['name'])
  end
end
return removed
",
    )
});

/// KEYS: stream, backlog. ARGV: group, entry id. Returns 1 the first time.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
end
return acked
",
    )
});

/// How this node uses the queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// The model sets whose entries this node claims (a worker's loaded sets; an API node
    /// that only adds entries may leave it empty).
    pub model_sets: Vec<String>,
    /// This node's name in the consumer group, unique per process (a restarted worker is a new
    /// consumer; its old claims are reclaimed like any dead worker's).
    pub consumer: String,
    /// Most entries added and not acknowledged, across all nodes and model sets.
    pub max_queued: u64,
    /// An entry not kept alive for this long is delivered to another worker. Longer than the
    /// gap between keep-alives (a third of it is a good gap), not than a job.
    pub visibility_timeout: Duration,
    /// Deliveries before a job is given up (see [`Delivery::is_exhausted`]).
    pub max_deliveries: u64,
    /// A consumer with nothing pending not seen for this long is removed from the group (a
    /// live worker asks for entries every second or so; one removed by mistake is made again
    /// by its next read). Each worker checks at most once per [`CONSUMER_SWEEP`].
    pub forget_consumers_after: Duration,
}

/// How often a worker looks for consumers to forget (at most).
pub const CONSUMER_SWEEP: Duration = Duration::from_secs(60);

impl QueueConfig {
    /// Claims from `model_sets` as a consumer with a fresh random name; a cap of 100, a
    /// 60-second visibility timeout, 3 deliveries, idle consumers forgotten after 10 minutes.
    pub fn new(model_sets: impl IntoIterator<Item = impl Into<String>>) -> Self {
        QueueConfig {
            model_sets: model_sets.into_iter().map(Into::into).collect(),
            consumer: format!("worker-{}", uuid::Uuid::new_v4()),
            max_queued: 100,
            visibility_timeout: Duration::from_secs(60),
            max_deliveries: 3,
            forget_consumers_after: Duration::from_secs(600),
        }
    }
}

/// A [`JobQueue`] on Redis Streams (see the module docs).
pub struct RedisJobQueue {
    pool: RedisPool,
    redis: RedisConfig,
    queue: QueueConfig,
    /// When this node last looked for consumers to forget (`None`: not yet).
    last_forget: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisJobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobQueue")
            .field("namespace", &self.redis.namespace)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// The group is gone (a server restarted without persistence, or a stream never written).
fn no_group(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

impl RedisJobQueue {
    /// Connects and makes sure the consumer group exists on every stream this node claims
    /// from, so a wrong URL or a server that is down fails at start-up.
    pub fn open(redis: &RedisConfig, queue: QueueConfig) -> Result<Self, StoreError> {
        if queue.max_deliveries == 0 {
            return Err(StoreError::Config(
                "the queue must allow at least one delivery per job".into(),
            ));
        }
        let this = RedisJobQueue {
            pool: RedisPool::open(redis)?,
            redis: redis.clone(),
            queue,
            last_forget: Mutex::new(None),
        };
        this.pool
            .run("could not set up the job queue", |c| this.create_groups(c))?;
        Ok(this)
    }

    fn stream(&self, model_set: &str) -> String {
        self.redis.key(format_args!("stream:{model_set}"))
    }

    fn progress_key(&self, job_id: JobId) -> String {
        self.redis.key(format_args!("progress:{job_id}"))
    }

    /// Creates the group on each claimed stream (from its first entry, so entries added
    /// before any worker started are delivered too); existing groups are left alone.
    fn create_groups(&self, c: &mut Connection) -> RedisResult<()> {
        for model_set in &self.queue.model_sets {
            let created: RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.stream(model_set))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query(c);
            match created {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs `op`; where the group is missing (the server lost it), creates it and runs again.
    fn with_groups<T>(
        &self,
        c: &mut Connection,
        mut op: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        match op(c) {
            Err(e) if no_group(&e) => {
                self.create_groups(c)?;
                op(c)
            }
            outcome => outcome,
        }
    }

    fn delivery(
        &self,
        model_set: &str,
        receipt: String,
        job: &str,
        deliveries: u64,
    ) -> Option<Delivery> {
        let Ok(job_id) = job.parse::<JobId>() else {
            tracing::warn!(
                receipt,
                model_set,
                "skipping a queue entry without a job id"
            );
            return None;
        };
        Some(Delivery {
            job_id,
            model_set: model_set.to_string(),
            receipt,
            deliveries,
            max_deliveries: self.queue.max_deliveries,
        })
    }

    /// Removes the consumers of this node's streams that have nothing pending and were not
    /// seen for [`QueueConfig::forget_consumers_after`], at most once per [`CONSUMER_SWEEP`]
    /// (or per that wait, if shorter). A failure is only logged: the next sweep tries again.
    fn forget_gone_consumers(&self) {
        let after = self.queue.forget_consumers_after;
        {
            let mut last = self.last_forget.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < CONSUMER_SWEEP.min(after)) {
                return;
            }
            *last = Some(Instant::now());
        }
        for model_set in &self.queue.model_sets {
            let mut invocation = FORGET.prepare_invoke();
            invocation
                .key(self.stream(model_set))
                .arg(GROUP)
                .arg(&self.queue.consumer)
                .arg(after.as_millis() as u64);
            let removed: Result<Vec<String>, StoreError> =
                self.pool.run("could not forget idle queue consumers", |c| {
                    self.with_groups(c, |c| invocation.invoke(c))
                });
            match removed {
                Ok(removed) if removed.is_empty() => {}
                Ok(removed) => tracing::info!(
                    model_set,
                    consumers = ?removed,
                    "forgot queue consumers gone for {after:?} with nothing pending"
                ),
                Err(e) => {
                    tracing::warn!(model_set, error = %e, "could not forget idle queue consumers")
                }
            }
        }
    }

    /// Entries of dead consumers, taken over by this one.
    fn reclaim(&self, max: usize) -> Result<Vec<Delivery>, StoreError> {
        let min_idle = self.queue.visibility_timeout.as_millis() as u64;
        let mut reclaimed = Vec::new();
        for model_set in &self.queue.model_sets {
            if reclaimed.len() >= max {
                break;
            }
            let mut invocation = RECLAIM.prepare_invoke();
            invocation
                .key(self.stream(model_set))
                .arg(GROUP)
                .arg(&self.queue.consumer)
                .arg(min_idle)
                .arg(max - reclaimed.len());
            let entries: Vec<(String, String, u64)> =
                self.pool.run("could not reclaim queue entries", |c| {
                    self.with_groups(c, |c| invocation.invoke(c))
                })?;
            reclaimed.extend(
                entries
                    .into_iter()
                    .filter_map(|(receipt, job, deliveries)| {
                        self.delivery(model_set, receipt, &job, deliveries)
                    }),
            );
        }
        Ok(reclaimed)
    }

    /// New entries, waiting up to `wait` for the first.
    fn read_new(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        let streams: Vec<String> = self
            .queue
            .model_sets
            .iter()
            .map(|m| self.stream(m))
            .collect();
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.queue.consumer)
            .arg("COUNT")
            .arg(max);
        // BLOCK 0 would wait forever.
        let wait_ms = wait.as_millis() as u64;
        if wait_ms > 0 {
            command.arg("BLOCK").arg(wait_ms);
        }
        command
            .arg("STREAMS")
            .arg(&streams)
            .arg(vec![">"; streams.len()]);
        let reply: Option<StreamReadReply> =
            self.pool
                .run_waiting("could not read the job queue", wait, |c| {
                    self.with_groups(c, |c| command.query(c))
                })?;
        let mut delivered = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(model_set) = self
                .queue
                .model_sets
                .iter()
                .find(|m| self.stream(m) == stream.key)
            else {
                continue;
            };
            for entry in stream.ids {
                let job: String = entry.get("job").unwrap_or_default();
                delivered.extend(self.delivery(model_set, entry.id, &job, 1));
            }
        }
        Ok(delivered)
    }
}

impl JobQueue for RedisJobQueue {
    fn enqueue(&self, model_set: &str, job_id: JobId) -> Result<Admission, StoreError> {
        let mut invocation = ENQUEUE.prepare_invoke();
        invocation
            .key(self.stream(model_set))
            .key(self.redis.key("backlog"))
            .arg(self.queue.max_queued)
            .arg(job_id);
        let (added, backlog): (u8, u64) = self
            .pool
            .run(&format!("could not queue job {job_id}"), |c| {
                invocation.invoke(c)
            })?;
        Ok(match added {
            1 => Admission::Accepted { backlog },
            _ => Admission::Full {
                backlog,
                cap: self.queue.max_queued,
            },
        })
    }

    fn claim(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        if max == 0 || self.queue.model_sets.is_empty() {
            return Ok(Vec::new());
        }
        let reclaimed = self.reclaim(max)?;
        self.forget_gone_consumers();
        if !reclaimed.is_empty() {
            return Ok(reclaimed);
        }
        self.read_new(max, wait)
    }

    fn keep_alive(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let mut invocation = KEEP_ALIVE.prepare_invoke();
        invocation
            .key(self.stream(&delivery.model_set))
            .arg(GROUP)
            .arg(&self.queue.consumer)
            .arg(&delivery.receipt);
        self.pool.run(
            &format!("could not renew the claim on job {}", delivery.job_id),
            |c| match invocation.invoke::<u8>(c) {
                // The server lost the group, and with it every claim.
                Err(e) if no_group(&e) => Ok(false),
                renewed => renewed.map(|n| n == 1),
            },
        )
    }

    fn ack(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let mut invocation = ACK.prepare_invoke();
        invocation
            .key(self.stream(&delivery.model_set))
            .key(self.redis.key("backlog"))
            .arg(GROUP)
            .arg(&delivery.receipt);
        self.pool.run(
            &format!("could not acknowledge job {} in the queue", delivery.job_id),
            |c| match invocation.invoke::<u8>(c) {
                Err(e) if no_group(&e) => Ok(()),
                acked => acked.map(drop),
            },
        )
    }

    fn backlog(&self) -> Result<u64, StoreError> {
        let key = self.redis.key("backlog");
        let backlog: Option<u64> = self.pool.run("could not read the queue backlog", |c| {
            redis::cmd("GET").arg(&key).query(c)
        })?;
        Ok(backlog.unwrap_or(0))
    }

    fn visibility_timeout(&self) -> Duration {
        self.queue.visibility_timeout
    }

    fn report_progress(&self, job_id: JobId, progress: Progress) -> Result<(), StoreError> {
        let key = self.progress_key(job_id);
        let report = serde_json::to_string(&progress).map_err(|e| StoreError::Corrupt {
            id: job_id,
            message: format!("its progress cannot be written: {e}"),
        })?;
        let lapse_ms = PROGRESS_LAPSE.as_millis() as u64;
        self.pool.run(
            &format!("could not report the progress of job {job_id}"),
            |c| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&report)
                    .arg("PX")
                    .arg(lapse_ms)
                    .query::<()>(c)
            },
        )
    }

    fn reported_progress(&self, job_id: JobId) -> Result<Option<Progress>, StoreError> {
        let key = self.progress_key(job_id);
        let (report, left_ms): (Option<String>, i64) = self.pool.run(
            &format!("could not read the progress of job {job_id}"),
            |c| {
                redis::pipe()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("PTTL")
                    .arg(&key)
                    .query(c)
            },
        )?;
        let Some(report) = report else {
            return Ok(None);
        };
        // A report from another version, or garbage: no progress rather than an error.
        let Ok(progress) = serde_json::from_str::<Progress>(&report) else {
            tracing::warn!(job_id, "an unreadable progress report is ignored");
            return Ok(None);
        };
        let left = Duration::from_millis(left_ms.max(0) as u64);
        Ok(Some(progress.aged(PROGRESS_LAPSE.saturating_sub(left))))
    }
}
