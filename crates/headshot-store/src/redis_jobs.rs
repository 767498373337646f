//! Job records in Redis, shared by every API node and worker of a deployment. Each change the
//! trait promises to be one write is one Lua script (Redis runs a script atomically), so a
//! node that dies mid-call leaves either all of it or none. Keys, under `{namespace}:`:
//!
//! - `job:{id}`: the record as JSON; `input:{id}`: a hash of the job's inputs (`settings` as
//!   JSON, `face`, `more.{n}` raw photo bytes) until it finishes;
//! - `next_id`: the last id handed out (`INCR`, so ids are unique across nodes);
//! - `unfinished` (scored by id) and `finished` (scored by `finished_at_ms`): sorted sets that
//!   answer the listings and the expiry without scanning records;
//! - `outbox`: a hash of pending webhook deliveries by delivery id; `secret:{name}`.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::SystemTime;

use headshot_core::store::{unix_millis, JobId, JobRecord, JobStore, StoreError, WebhookDelivery};
use headshot_core::GenerationJob;
use redis::Script;

use crate::redis_pool::{RedisConfig, RedisPool};

/// Writes a record and everything that goes with it, in one step.
/// KEYS: job, next_id, unfinished, finished, input, outbox.
/// ARGV: mode (insert | update | finish), id, record JSON, finished score ('' when not
/// finished), '1' when unfinished, delivery id ('' for none), delivery JSON, then the input's
/// field/value pairs (none: keep the inputs as they are).
static PUT_RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local mode, id = ARGV[1], ARGV[2]
if mode ~= 'insert' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
if mode == 'insert' then
  -- An id that was not reserved here (e.g. imported) must still never be handed out again.
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tonumber(id) > last then redis.call('SET', KEYS[2], id) end
end
if ARGV[5] == '1' then redis.call('ZADD', KEYS[3], id, id) else redis.call('ZREM', KEYS[3], id) end
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[4], ARGV[4], id) else redis.call('ZREM', KEYS[4], id) end
if mode == 'finish' or #ARGV > 7 then redis.call('DEL', KEYS[5]) end
if #ARGV > 7 then redis.call('HSET', KEYS[5], unpack(ARGV, 8)) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[6], ARGV[6], ARGV[7]) end
return 1
",
    )
});

/// Removes the records finished before a cutoff with their inputs and returns them.
/// KEYS: finished. ARGV: cutoff (ms, exclusive), key prefix. The record keys are built here
/// from the ids; they share the namespace's hash tag, so they live in the same cluster slot.
static PURGE_EXPIRED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local removed = {}
for _, id in ipairs(ids) do
  local job = ARGV[2] .. 'job:' .. id
  local record = redis.call('GET', job)
  if record then table.insert(removed, record) end
  redis.call('DEL', job, ARGV[2] .. 'input:' .. id)
  redis.call('ZREM', KEYS[1], id)
end
return removed
",
    )
});

/// A [`JobStore`] in a Redis server (see the module docs for its keys).
pub struct RedisJobStore {
    pool: RedisPool,
    config: RedisConfig,
}

impl std::fmt::Debug for RedisJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobStore")
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

fn corrupt(id: JobId, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id,
        message: e.to_string(),
    }
}

fn decode(id: JobId, bytes: &[u8]) -> Result<JobRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(id, e))
}

/// Records that cannot be read are logged and left out, so one bad record does not hide all
/// others (as in the redb store).
fn readable(id: JobId, bytes: &[u8]) -> Option<JobRecord> {
    decode(id, bytes)
        .inspect_err(|e| tracing::warn!(error = %e, "skipping unreadable job record"))
        .ok()
}

/// The record's place in the two index sets: its `finished` score, and whether it is unfinished.
fn index_of(record: &JobRecord) -> (String, &'static str) {
    let finished = match (record.status.is_finished(), record.finished_at_ms) {
        (true, Some(at)) => at.to_string(),
        _ => String::new(),
    };
    let unfinished = if record.status.is_finished() {
        "0"
    } else {
        "1"
    };
    (finished, unfinished)
}

enum Mode {
    Insert,
    Update,
    Finish,
}

impl RedisJobStore {
    /// Connects once, so a wrong URL or a server that is down fails at start-up.
    pub fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        let store = RedisJobStore {
            pool: RedisPool::open(config)?,
            config: config.clone(),
        };
        store.pool.run("could not reach the Redis job store", |c| {
            redis::cmd("PING").query::<()>(c)
        })?;
        Ok(store)
    }

    fn job_key(&self, id: JobId) -> String {
        self.config.key(format_args!("job:{id}"))
    }

    fn input_key(&self, id: JobId) -> String {
        self.config.key(format_args!("input:{id}"))
    }

    /// One [`PUT_RECORD`]; `false` when an update or finish found no record.
    fn put(
        &self,
        mode: Mode,
        record: &JobRecord,
        input: Option<&GenerationJob>,
        webhook: Option<&WebhookDelivery>,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_vec(record).map_err(|e| corrupt(record.id, e))?;
        let (finished, unfinished) = index_of(record);
        let (delivery_id, delivery) = match webhook {
            Some(d) => (
                d.id.as_str(),
                serde_json::to_vec(d).map_err(|e| corrupt(record.id, e))?,
            ),
            None => ("", Vec::new()),
        };
        let mut invocation = PUT_RECORD.prepare_invoke();
        invocation
            .key(self.job_key(record.id))
            .key(self.config.key("next_id"))
            .key(self.config.key("unfinished"))
            .key(self.config.key("finished"))
            .key(self.input_key(record.id))
            .key(self.config.key("outbox"));
        let mode = match mode {
            Mode::Insert => "insert",
            Mode::Update => "update",
            Mode::Finish => "finish",
        };
        invocation
            .arg(mode)
            .arg(record.id)
            .arg(json)
            .arg(finished)
            .arg(unfinished)
            .arg(delivery_id)
            .arg(delivery);
        if let Some(job) = input {
            let settings = serde_json::to_vec(&job.settings).map_err(|e| corrupt(record.id, e))?;
            invocation.arg("settings").arg(settings);
            invocation.arg("face").arg(job.face_image.as_slice());
            for (position, photo) in job.more_face_images.iter().enumerate() {
                invocation
                    .arg(format!("more.{position}"))
                    .arg(photo.as_slice());
            }
        }
        let written: i64 = self
            .pool
            .run(&format!("could not store job {}", record.id), |c| {
                invocation.invoke(c)
            })?;
        Ok(written == 1)
    }

    /// The records of `ids` that exist and can be read, in the order of `ids`.
    fn records(&self, ids: &[JobId]) -> Result<Vec<JobRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|&id| self.job_key(id)).collect();
        let found: Vec<Option<Vec<u8>>> = self.pool.run("could not read job records", |c| {
            redis::cmd("MGET").arg(&keys).query(c)
        })?;
        Ok(ids
            .iter()
            .zip(found)
            .filter_map(|(&id, bytes)| readable(id, &bytes?))
            .collect())
    }

    fn finished_before(&self, cutoff: SystemTime) -> Result<Vec<JobId>, StoreError> {
        let finished = self.config.key("finished");
        let cutoff = format!("({}", unix_millis(cutoff));
        self.pool.run("could not list expired jobs", |c| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&finished)
                .arg("-inf")
                .arg(&cutoff)
                .query(c)
        })
    }
}

impl JobStore for RedisJobStore {
    fn next_id(&self) -> Result<JobId, StoreError> {
        let counter = self.config.key("next_id");
        self.pool.run("could not reserve a job id", |c| {
            redis::cmd("INCR").arg(&counter).query(c)
        })
    }

    fn insert(&self, record: &JobRecord) -> Result<(), StoreError> {
        self.put(Mode::Insert, record, None, None).map(drop)
    }

    fn update(&self, record: &JobRecord) -> Result<(), StoreError> {
        match self.put(Mode::Update, record, None, None)? {
            true => Ok(()),
            false => Err(StoreError::JobNotFound(record.id)),
        }
    }

    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let key = self.job_key(id);
        let bytes: Option<Vec<u8>> = self.pool.run(&format!("could not read job {id}"), |c| {
            redis::cmd("GET").arg(&key).query(c)
        })?;
        bytes.map(|b| decode(id, &b)).transpose()
    }

    fn list_unfinished(&self) -> Result<Vec<JobRecord>, StoreError> {
        let unfinished = self.config.key("unfinished");
        let ids: Vec<JobId> = self.pool.run("could not list unfinished jobs", |c| {
            redis::cmd("ZRANGE")
                .arg(&unfinished)
                .arg(0)
                .arg(-1)
                .query(c)
        })?;
        self.records(&ids)
    }

    fn insert_with_input(&self, record: &JobRecord, job: &GenerationJob) -> Result<(), StoreError> {
        self.put(Mode::Insert, record, Some(job), None).map(drop)
    }

    fn input(&self, id: JobId) -> Result<Option<GenerationJob>, StoreError> {
        let key = self.input_key(id);
        let mut fields: HashMap<String, Vec<u8>> = self
            .pool
            .run(&format!("could not read the inputs of job {id}"), |c| {
                redis::cmd("HGETALL").arg(&key).query(c)
            })?;
        let (Some(settings), Some(face_image)) = (fields.remove("settings"), fields.remove("face"))
        else {
            return Ok(None);
        };
        let mut more: Vec<(usize, Vec<u8>)> = fields
            .into_iter()
            .filter_map(|(field, photo)| {
                let position = field.strip_prefix("more.")?.parse().ok()?;
                Some((position, photo))
            })
            .collect();
        more.sort_by_key(|(position, _)| *position);
        Ok(Some(GenerationJob {
            settings: serde_json::from_slice(&settings).map_err(|e| corrupt(id, e))?,
            face_image,
            more_face_images: more.into_iter().map(|(_, photo)| photo).collect(),
        }))
    }

    fn finish(
        &self,
        record: &JobRecord,
        webhook: Option<&WebhookDelivery>,
    ) -> Result<(), StoreError> {
        match self.put(Mode::Finish, record, None, webhook)? {
            true => Ok(()),
            false => Err(StoreError::JobNotFound(record.id)),
        }
    }

    fn pending_webhooks(&self) -> Result<Vec<WebhookDelivery>, StoreError> {
        let outbox = self.config.key("outbox");
        let entries: Vec<Vec<u8>> = self.pool.run("could not read the webhook outbox", |c| {
            redis::cmd("HVALS").arg(&outbox).query(c)
        })?;
        let mut pending: Vec<WebhookDelivery> = entries
            .iter()
            .filter_map(|bytes| {
                serde_json::from_slice(bytes)
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "skipping unreadable webhook delivery"),
                    )
                    .ok()
            })
            .collect();
        pending.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(pending)
    }

    fn ack_webhook(&self, delivery_id: &str) -> Result<(), StoreError> {
        let outbox = self.config.key("outbox");
        self.pool
            .run("could not acknowledge a webhook delivery", |c| {
                redis::cmd("HDEL")
                    .arg(&outbox)
                    .arg(delivery_id)
                    .query::<()>(c)
            })
    }

    fn get_or_init_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = self.config.key(format_args!("secret:{name}"));
        // SET NX keeps the first value any node wrote; the GET in the same transaction reads
        // whichever that was.
        let (secret,): (Vec<u8>,) =
            self.pool
                .run(&format!("could not read the secret {name:?}"), |c| {
                    redis::pipe()
                        .atomic()
                        .cmd("SET")
                        .arg(&key)
                        .arg(candidate)
                        .arg("NX")
                        .ignore()
                        .cmd("GET")
                        .arg(&key)
                        .query(c)
                })?;
        Ok(secret)
    }

    fn list_expired(&self, cutoff: SystemTime) -> Result<Vec<JobId>, StoreError> {
        self.finished_before(cutoff)
    }

    fn purge_expired(&self, cutoff: SystemTime) -> Result<Vec<JobRecord>, StoreError> {
        let mut invocation = PURGE_EXPIRED.prepare_invoke();
        invocation
            .key(self.config.key("finished"))
            .arg(unix_millis(cutoff))
            .arg(self.config.key(""));
        let removed: Vec<Vec<u8>> = self
            .pool
            .run("could not remove expired jobs", |c| invocation.invoke(c))?;
        Ok(removed
            .iter()
            .filter_map(|bytes| {
                serde_json::from_slice(bytes)
                    .inspect_err(|e| tracing::warn!(error = %e, "purged an unreadable job record"))
                    .ok()
            })
            .collect())
    }
}
