//! What every diffusers scheduler shares: the training noise schedule (betas, cumulative
//! alphas, sigmas), the timestep spacings and Karras' sigma ramp, with numpy's and torch's
//! arithmetic where it decides values (f32 tables, f64 interpolation, half-to-even rounding).

use serde::Deserialize;

use super::SchedulerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredCosCapV2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// The keys that define the training noise schedule.
#[derive(Debug, Clone)]
pub struct TrainSchedule<'a> {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<&'a [f64]>,
    pub rescale_betas_zero_snr: bool,
}

impl TrainSchedule<'_> {
    pub fn betas(&self) -> Result<Vec<f32>, SchedulerError> {
        let n = self.num_train_timesteps;
        if n == 0 {
            return Err(SchedulerError::Unsupported(
                "num_train_timesteps must be positive".into(),
            ));
        }
        let betas = if let Some(trained) = self.trained_betas {
            if trained.len() != n {
                return Err(SchedulerError::Unsupported(format!(
                    "trained_betas has {} entries, num_train_timesteps is {n}",
                    trained.len()
                )));
            }
            trained.iter().map(|&b| b as f32).collect()
        } else {
            match self.beta_schedule {
                BetaSchedule::Linear => linspace_f32(self.beta_start, self.beta_end, n),
                BetaSchedule::ScaledLinear => {
                    linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                        .into_iter()
                        .map(|b| b * b)
                        .collect()
                }
                BetaSchedule::SquaredCosCapV2 => {
                    let alpha_bar = |t: f64| {
                        ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                            .cos()
                            .powi(2)
                    };
                    (0..n)
                        .map(|i| {
                            let t1 = i as f64 / n as f64;
                            let t2 = (i + 1) as f64 / n as f64;
                            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                        })
                        .collect()
                }
            }
        };
        Ok(if self.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        })
    }

    /// torch's `cumprod(1 - betas)`: accumulated in f64, stored per step in f32.
    pub fn alphas_cumprod(&self) -> Result<Vec<f32>, SchedulerError> {
        let mut product = 1.0f64;
        Ok(self
            .betas()?
            .iter()
            .map(|&b| {
                product *= (1.0f32 - b) as f64;
                product as f32
            })
            .collect())
    }

    /// The sigma schedulers' table: `alphas_cumprod`, with the last forced to 2^-24 under
    /// zero-terminal-SNR (so its sigma stays finite), as the sigma-based diffusers classes do.
    pub fn sigma_alphas_cumprod(&self) -> Result<Vec<f32>, SchedulerError> {
        let mut a = self.alphas_cumprod()?;
        if self.rescale_betas_zero_snr {
            if let Some(last) = a.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        Ok(a)
    }
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in f32, ascending with t.
pub fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|&a| ((1.0f32 - a) / a).sqrt())
        .collect()
}

/// numpy's `round` (half to even).
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// `np.linspace(start, stop, n)` in f64: `i * step + start`, the last value exactly `stop`.
pub fn np_linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i == n - 1 {
                stop
            } else {
                i as f64 * step + start
            }
        })
        .collect()
}

/// `np.arange(start, stop, step)` for a negative float step.
pub fn np_arange_down(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * step).collect()
}

/// `torch.linspace(start, end, n, dtype=float32)`: torch fills the first half from the start
/// and the second half from the end, which keeps both endpoints exact.
pub fn linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start as f32];
    }
    let (s, e) = (start as f32, end as f32);
    let step = (e - s) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                s + step * i as f32
            } else {
                e - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv:2305.08891, Algorithm 1).
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut product = 1.0f64;
    let sqrt_bar: Vec<f64> = betas
        .iter()
        .map(|b| {
            product *= 1.0 - *b as f64;
            product.sqrt()
        })
        .collect();
    let (first, last) = (sqrt_bar[0], sqrt_bar[sqrt_bar.len() - 1]);
    let rescaled: Vec<f64> = sqrt_bar
        .iter()
        .map(|s| (s - last) * first / (first - last))
        .collect();
    let bar: Vec<f64> = rescaled.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(bar.len());
    for (i, &b) in bar.iter().enumerate() {
        let alpha = if i == 0 { b } else { b / bar[i - 1] };
        out.push((1.0 - alpha) as f32);
    }
    out
}

/// `np.interp(x, arange(len(table)), table)` with the table in f32 and the result in f64.
pub fn interp(x: f64, table: &[f32]) -> f64 {
    let last = table.len() - 1;
    if x <= 0.0 {
        return table[0] as f64;
    }
    if x >= last as f64 {
        return table[last] as f64;
    }
    let j = x.floor() as usize;
    let (lo, hi) = (table[j] as f64, table[j + 1] as f64);
    (hi - lo) * (x - j as f64) + lo
}

/// diffusers' `_sigma_to_t`: the (fractional) training timestep of `sigma`, interpolating in
/// log sigma between its two neighbours of the f32 table (clamped to the table's range).
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let at_or_below = log_sigmas
        .iter()
        .filter(|&&l| log_sigma - l as f64 >= 0.0)
        .count();
    let low_idx = at_or_below.saturating_sub(1).min(log_sigmas.len() - 2);
    let (low, high) = (log_sigmas[low_idx], log_sigmas[low_idx + 1]);
    // numpy: (f32 - f64) / (f32 - f32), the denominator rounded to f32 first.
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * (low_idx + 1) as f64
}

/// Karras et al. (2022)'s ramp from `sigma_max` to `sigma_min` with rho 7, `n` values (f64).
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|ramp| (max_inv + ramp * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// The step count must be usable with the training schedule.
pub fn check_steps(steps: usize, train: usize) -> Result<(), SchedulerError> {
    if steps == 0 || steps > train {
        return Err(SchedulerError::BadStepCount { steps, train });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_rounding_is_half_to_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(2.6), 3.0);
    }

    #[test]
    fn linspace_keeps_both_endpoints() {
        let v = linspace_f32(0.1, 0.7, 7);
        assert_eq!(v[0], 0.1f32);
        assert_eq!(v[6], 0.7f32);
        assert_eq!(v.len(), 7);
    }

    #[test]
    fn sigma_to_t_inverts_the_table_at_its_points() {
        let table: Vec<f32> = (1..=10).map(|i| i as f32).collect();
        let logs: Vec<f32> = table.iter().map(|s| s.ln()).collect();
        assert!((sigma_to_t(4.0, &logs) - 3.0).abs() < 1e-6);
        assert_eq!(sigma_to_t(0.5, &logs), 0.0);
        assert_eq!(sigma_to_t(20.0, &logs), 9.0);
    }
}
