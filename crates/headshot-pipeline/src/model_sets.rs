//! Several base models in one pipeline: a job's `model_id` picks one of the operator's model
//! sets. The default set's base model stays loaded; the others load when a job first names
//! them and stay while they fit the memory allowed for them, the least recently used unloaded
//! first to make room. The worker batches only jobs of one model set together (`model_id` is in
//! the batch key), so a batch never mixes bases and a base in use is never unloaded under it:
//! the device thread renders one batch at a time, and a batch holds its base by `Arc`.
//!
//! A set's memory is measured when it loads (its recorded tensors). Before its first load it is
//! taken to be the default base's size: SD1.5 fine-tunes share one architecture, so that is
//! exact for the usual case and only an estimate for a set with other configs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use headshot_core::ModelSetState;
use headshot_weights::ResolvedModelSet;

use crate::base_model::{BaseLoad, BaseModel};
use crate::config::{ModelSet, OnDemandSet};
use crate::error::PipelineError;
use crate::Pipeline;

const MIB: u64 = 1 << 20;

/// The default set's name and the sets loaded on demand, with those resident now.
pub(crate) struct ModelSets {
    default_id: String,
    on_demand: BTreeMap<String, ResolvedModelSet>,
    /// Bytes the on-demand sets may hold at once; `None`: one set at a time.
    budget: Option<u64>,
    resident: Mutex<Resident<BaseModel>>,
}

impl ModelSets {
    /// Refuses a budget that cannot hold one set the size of `default`.
    pub fn new(
        default_id: &str,
        on_demand: Vec<OnDemandSet>,
        budget: Option<u64>,
        default: &BaseModel,
    ) -> Result<ModelSets, PipelineError> {
        let mut sets = BTreeMap::new();
        for set in on_demand {
            let ModelSet::Resolved(resolved) = set.models else {
                return Err(PipelineError::ModelSets(format!(
                    "the model set {} is not resolved (PipelineConfig::resolve_on_demand)",
                    set.id
                )));
            };
            sets.insert(set.id, resolved);
        }
        if let Some(budget) = budget.filter(|_| !sets.is_empty()) {
            if budget < default.bytes {
                return Err(PipelineError::ModelSets(format!(
                    "the memory for model sets loaded on demand ({} MiB) cannot hold one: the default set alone takes {} MiB at this dtype",
                    budget / MIB,
                    default.bytes.div_ceil(MIB)
                )));
            }
        }
        if !sets.is_empty() {
            tracing::info!(
                default = default_id,
                on_demand = ?sets.keys().collect::<Vec<_>>(),
                budget_mib = budget.map(|b| b / MIB),
                "model sets"
            );
        }
        Ok(ModelSets {
            default_id: default_id.to_string(),
            on_demand: sets,
            budget,
            resident: Mutex::new(Resident::default()),
        })
    }

    fn resident(&self) -> std::sync::MutexGuard<'_, Resident<BaseModel>> {
        self.resident
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The ids jobs may name, the default set's first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.default_id.as_str()).chain(self.on_demand.keys().map(String::as_str))
    }
}

impl Pipeline {
    /// The ids a job's `model_id` may name: the default set's name, then the sets loaded on
    /// demand.
    pub fn model_set_ids(&self) -> Vec<String> {
        self.model_sets.ids().map(str::to_string).collect()
    }

    /// Every model set with whether it is loaded now and its memory.
    pub fn model_set_states(&self) -> Vec<ModelSetState> {
        let sets = &self.model_sets;
        let resident = sets.resident();
        let mut states = vec![ModelSetState {
            id: sets.default_id.clone(),
            is_default: true,
            loaded: true,
            bytes: Some(self.base.bytes),
        }];
        states.extend(sets.on_demand.keys().map(|id| ModelSetState {
            id: id.clone(),
            is_default: false,
            loaded: resident.contains(id),
            bytes: resident.known_size(id),
        }));
        states
    }

    /// Unloads every set loaded on demand (the default set stays), returning their ids, least
    /// recently used first. Their sizes stay known for the next load's room.
    pub fn unload_on_demand_sets(&self) -> Vec<String> {
        let unloaded = self.model_sets.resident().remove_all();
        if !unloaded.is_empty() {
            tracing::info!(unloaded = ?unloaded, "model sets unloaded on request");
        }
        unloaded
    }

    /// The base model of `model_id` (`None` or the default set's name: the default one),
    /// loading it first if it is not resident, after unloading the least recently used sets
    /// it needs the room of.
    pub(crate) fn base_model(
        &self,
        model_id: Option<&str>,
    ) -> Result<Arc<BaseModel>, PipelineError> {
        let sets = &self.model_sets;
        let id = match model_id {
            None => return Ok(self.base.clone()),
            Some(id) if id == sets.default_id => return Ok(self.base.clone()),
            Some(id) => id,
        };
        let Some(set) = sets.on_demand.get(id) else {
            let known: Vec<&str> = sets.ids().collect();
            return Err(PipelineError::InvalidInput(format!(
                "the model set {id} is not configured here (known: {})",
                known.join(", ")
            )));
        };
        // Held while loading: one load at a time, and no second copy of the same set.
        let mut resident = sets.resident();
        if let Some(base) = resident.get(id) {
            return Ok(base);
        }
        let expected = resident.known_size(id).unwrap_or(self.base.bytes);
        let unloaded = resident.make_room(expected, sets.budget);
        if !unloaded.is_empty() {
            tracing::info!(unloaded = ?unloaded, to_load = id, "unloaded model sets to make room");
        }
        let start = Instant::now();
        tracing::info!(model_set = id, "loading a model set on demand");
        let with = BaseLoad {
            adapter: &self.adapter,
            num_tokens: self.projection.config().num_tokens,
            adapter_scale: self.adapter_scale,
            dtype: self.dtype,
            device: &self.device,
        };
        let base = Arc::new(BaseModel::load(set, &with).map_err(|source| {
            PipelineError::ModelSetLoad {
                id: id.to_string(),
                source: Box::new(source),
            }
        })?);
        // Measured now: if it is larger than expected, unload more.
        let more = resident.make_room(base.bytes, sets.budget);
        if !more.is_empty() {
            tracing::info!(unloaded = ?more, loaded = id, "unloaded model sets to make room");
        }
        if sets.budget.is_some_and(|b| base.bytes > b) {
            tracing::warn!(model_set = id, mib = base.bytes / MIB, "the model set is larger than the memory allowed for sets loaded on demand; it stays alone");
        }
        resident.insert(id, base.clone(), base.bytes);
        tracing::info!(
            model_set = id,
            mib = base.bytes / MIB,
            resident_mib = resident.bytes() / MIB,
            resident = ?resident.ids_by_use(),
            elapsed_ms = start.elapsed().as_millis() as u64,
            "model set loaded"
        );
        Ok(base)
    }
}

/// Resident values by id with their sizes, least recently used first to go.
#[derive(Debug)]
pub(crate) struct Resident<T> {
    entries: Vec<Entry<T>>,
    /// Sizes of every value ever inserted, kept after it is removed (its next load's estimate).
    sizes: BTreeMap<String, u64>,
    clock: u64,
}

#[derive(Debug)]
struct Entry<T> {
    id: String,
    value: Arc<T>,
    bytes: u64,
    used: u64,
}

impl<T> Default for Resident<T> {
    fn default() -> Self {
        Resident {
            entries: Vec::new(),
            sizes: BTreeMap::new(),
            clock: 0,
        }
    }
}

impl<T> Resident<T> {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The value of `id`, marked as used now.
    pub fn get(&mut self, id: &str) -> Option<Arc<T>> {
        let now = self.tick();
        let entry = self.entries.iter_mut().find(|e| e.id == id)?;
        entry.used = now;
        Some(entry.value.clone())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    pub fn known_size(&self, id: &str) -> Option<u64> {
        self.sizes.get(id).copied()
    }

    /// The bytes of every resident value.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// Removes the least recently used values until `incoming` more bytes fit in `budget`; with
    /// no budget, room for exactly one value: every other is removed. Returns the ids removed,
    /// in order.
    pub fn make_room(&mut self, incoming: u64, budget: Option<u64>) -> Vec<String> {
        let mut removed = Vec::new();
        loop {
            let fits = match budget {
                Some(budget) => self.bytes() + incoming <= budget,
                None => self.entries.is_empty(),
            };
            if fits {
                return removed;
            }
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => removed.push(self.entries.remove(i).id),
                None => return removed,
            }
        }
    }

    /// Removes every value, returning their ids least recently used first (sizes stay known).
    pub fn remove_all(&mut self) -> Vec<String> {
        let ids = self.ids_by_use().into_iter().map(str::to_string).collect();
        self.entries.clear();
        ids
    }

    /// Adds `value` as used now (replacing an entry of the same id).
    pub fn insert(&mut self, id: &str, value: Arc<T>, bytes: u64) {
        self.entries.retain(|e| e.id != id);
        self.sizes.insert(id.to_string(), bytes);
        let used = self.tick();
        self.entries.push(Entry {
            id: id.to_string(),
            value,
            bytes,
            used,
        });
    }

    /// The resident ids, least recently used first.
    pub fn ids_by_use(&self) -> Vec<&str> {
        let mut entries: Vec<&Entry<T>> = self.entries.iter().collect();
        entries.sort_by_key(|e| e.used);
        entries.into_iter().map(|e| e.id.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(entries: &[(&str, u64)]) -> Resident<()> {
        let mut r = Resident::default();
        for (id, bytes) in entries {
            r.insert(id, Arc::new(()), *bytes);
        }
        r
    }

    #[test]
    fn without_a_budget_one_set_is_resident_at_a_time() {
        let mut r = with(&[("a", 10)]);
        assert_eq!(r.make_room(10, None), ["a"]);
        r.insert("b", Arc::new(()), 10);
        assert_eq!(r.ids_by_use(), ["b"]);
        // Nothing to remove when it is empty.
        let mut empty = Resident::<()>::default();
        assert!(empty.make_room(10, None).is_empty());
    }

    #[test]
    fn the_least_recently_used_go_first_until_the_newcomer_fits() {
        let mut r = with(&[("a", 10), ("b", 10), ("c", 10)]);
        // `a` used again: `b` is now the oldest.
        assert!(r.get("a").is_some());
        assert_eq!(r.make_room(10, Some(30)), ["b"]);
        r.insert("d", Arc::new(()), 10);
        assert_eq!(r.ids_by_use(), ["c", "a", "d"]);
        // A big one needs two to go.
        assert_eq!(r.make_room(25, Some(40)), ["c", "a"]);
        assert_eq!(r.bytes(), 10);
        // Sizes stay known after removal (the next load's estimate).
        assert_eq!(r.known_size("b"), Some(10));
        assert!(!r.contains("b"));
    }

    #[test]
    fn removing_all_keeps_the_sizes() {
        let mut r = with(&[("a", 10), ("b", 20)]);
        assert!(r.get("a").is_some());
        assert_eq!(r.remove_all(), ["b", "a"]);
        assert_eq!(r.bytes(), 0);
        assert!(!r.contains("a"));
        assert_eq!(r.known_size("b"), Some(20));
    }

    #[test]
    fn one_value_larger_than_the_budget_empties_the_rest() {
        let mut r = with(&[("a", 10), ("b", 10)]);
        assert_eq!(r.make_room(50, Some(40)), ["a", "b"]);
        assert_eq!(r.bytes(), 0);
    }
}
