//! The tensors a model took from its VarBuilder, kept by name, so the model can be built again
//! from the same tensors with a few of them replaced (a user LoRA merged into copies of the
//! affected weights) without reading or copying the rest: candle tensors are shared handles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

/// Every tensor a model loaded, by its full VarBuilder name, in the dtype and on the device the
/// model holds it.
#[derive(Debug, Clone, Default)]
pub struct RecordedWeights {
    tensors: HashMap<String, Tensor>,
}

impl RecordedWeights {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The memory these tensors hold, in bytes (each counted once, at its loaded dtype).
    pub fn bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum()
    }

    /// A VarBuilder over these tensors with `replaced` taking the place of theirs.
    pub fn var_builder_with(
        &self,
        replaced: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> VarBuilder<'static> {
        let mut tensors = self.tensors.clone();
        tensors.extend(replaced);
        VarBuilder::from_tensors(tensors, dtype, device)
    }
}

/// Wraps root VarBuilder `inner`: the returned VarBuilder reads through it and `finish` gives
/// what was read. Call `finish` after the model is built.
pub fn record(inner: VarBuilder<'static>) -> (VarBuilder<'static>, Recording) {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let dtype = inner.dtype();
    let device = inner.device().clone();
    let backend = Recorder {
        inner,
        seen: seen.clone(),
    };
    (
        VarBuilder::from_backend(Box::new(backend), dtype, device),
        Recording { seen },
    )
}

/// The other end of [`record`].
pub struct Recording {
    seen: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl Recording {
    pub fn finish(self) -> RecordedWeights {
        let tensors = match self.seen.lock() {
            Ok(mut map) => std::mem::take(&mut *map),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        RecordedWeights { tensors }
    }
}

struct Recorder {
    inner: VarBuilder<'static>,
    seen: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl Recorder {
    fn keep(&self, name: &str, tensor: &Tensor) {
        if let Ok(mut map) = self.seen.lock() {
            map.insert(name.to_string(), tensor.clone());
        }
    }
}

impl SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, _dev: &Device) -> Result<Tensor> {
        let tensor = self.inner.get_with_hints_dtype(s, name, h, dtype)?;
        self.keep(name, &tensor);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> Result<Tensor> {
        let tensor = self.inner.get_unchecked_dtype(name, dtype)?;
        self.keep(name, &tensor);
        Ok(tensor)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_what_was_read_and_rebuilds_with_replacements() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[1f32, 2.0], &dev).unwrap();
        let b = Tensor::new(&[3f32], &dev).unwrap();
        let source = HashMap::from([("m.a".to_string(), a), ("m.b".to_string(), b)]);
        let (vb, recording) = record(VarBuilder::from_tensors(source, DType::F32, &dev));
        let read = vb.pp("m").get(2, "a").unwrap();
        assert!(vb.pp("m").contains_tensor("b"));
        let recorded = recording.finish();
        assert_eq!(recorded.names().collect::<Vec<_>>(), vec!["m.a"]);
        assert_eq!(recorded.bytes(), 8);
        let replaced = HashMap::from([("m.a".to_string(), (read * 2.0).unwrap())]);
        let vb = recorded.var_builder_with(replaced, DType::F32, &dev);
        let again = vb.get(2, "m.a").unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(again, vec![2.0, 4.0]);
        // The record itself is untouched.
        let kept = recorded.get("m.a").unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(kept, vec![1.0, 2.0]);
    }
}
