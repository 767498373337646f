//! Comparing tensors (with the `tensors` feature).

use candle_core::{DType, Tensor};

/// The largest absolute value, in f32.
pub fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .and_then(|t| t.abs())
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_scalar::<f32>())
        .expect("a float tensor")
}

/// The largest absolute difference of two tensors of one shape, in f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F32).expect("a float tensor");
    let b = b.to_dtype(DType::F32).expect("a float tensor");
    max_abs(&(a - b).expect("same shapes"))
}
