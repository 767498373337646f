//! `DPMSolverMultistepScheduler` as DPM-Solver++ (Lu et al. 2022): data prediction, orders 1
//! and 2 (2M: the default `solver_order` 2, `solver_type` midpoint or heun), `lower_order_final`,
//! with or without Karras sigmas. Integer timesteps, sigmas from the training table (or the
//! Karras ramp), every coefficient computed in f32 from the sigmas as torch does.

use candle_core::{bail, Result, Tensor};
use headshot_core::SchedulerName;

use super::schedule::{
    check_steps, interp, karras_sigmas, np_arange_down, np_linspace, round_half_even, sigma_to_t,
    train_sigmas, BetaSchedule, PredictionType, TimestepSpacing,
};
use super::sigma_config::{unsupported, SigmaConfig};
use super::{lin2, Sampler, SchedulerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// `(alpha_t, sigma_t, lambda_t)` of a sigma: `alpha = 1 / sqrt(sigma^2 + 1)`,
/// `sigma_t = sigma * alpha`, `lambda = ln(alpha) - ln(sigma_t)` (infinite at sigma 0).
pub(crate) fn alpha_sigma_lambda(sigma: f32) -> (f32, f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}

/// The data prediction x0 from the model output at `sigma` (DPM-Solver++ and UniPC).
pub(crate) fn data_prediction(
    prediction_type: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Result<Tensor> {
    let (alpha_t, sigma_t, _) = alpha_sigma_lambda(sigma);
    match prediction_type {
        PredictionType::Epsilon => (sample - (model_output * sigma_t as f64)?)? / alpha_t as f64,
        PredictionType::Sample => Ok(model_output.clone()),
        PredictionType::VPrediction => lin2(alpha_t, sample, -sigma_t, model_output),
    }
}

/// The integer timesteps and sigmas of the multistep solvers (DPM-Solver and UniPC share
/// them, but for the end of the linspace range and the leading ratio, given by the caller).
pub(crate) struct MultistepGrid {
    pub timesteps: Vec<i64>,
    pub sigmas: Vec<f32>,
}

pub(crate) fn multistep_grid(
    config: &SigmaConfig,
    train_sigmas: &[f32],
    n: usize,
    last_timestep: usize,
    leading_ratio: usize,
    karras: bool,
    truncate_squaredcos: bool,
) -> std::result::Result<MultistepGrid, SchedulerError> {
    check_steps(n, config.num_train_timesteps)?;
    let train = config.num_train_timesteps;
    let mut timesteps: Vec<i64> = match config.timestep_spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, last_timestep as f64 - 1.0, n + 1)
            .into_iter()
            .rev()
            .take(n)
            .map(|t| round_half_even(t) as i64)
            .collect(),
        TimestepSpacing::Leading => (0..=n)
            .rev()
            .take(n)
            .map(|i| (i * leading_ratio + config.steps_offset) as i64)
            .collect(),
        TimestepSpacing::Trailing => {
            np_arange_down(last_timestep as f64, 0.0, -(train as f64 / n as f64))
                .into_iter()
                .map(|t| round_half_even(t) as i64 - 1)
                .collect()
        }
    };
    let sigmas: Vec<f64> = if karras {
        let log_sigmas: Vec<f32> = train_sigmas.iter().map(|s| s.ln()).collect();
        let sigmas = karras_sigmas(
            train_sigmas[0] as f64,
            train_sigmas[train_sigmas.len() - 1] as f64,
            n,
        );
        timesteps = sigmas
            .iter()
            .map(|&s| {
                let t = sigma_to_t(s, &log_sigmas);
                // Rounded, but for squaredcos_cap_v2 where DPM-Solver keeps the fraction, which
                // the int64 cast then truncates.
                if truncate_squaredcos && config.beta_schedule == BetaSchedule::SquaredCosCapV2 {
                    t.trunc() as i64
                } else {
                    round_half_even(t) as i64
                }
            })
            .collect();
        sigmas
    } else {
        let max = train as i64 - 1;
        if let Some(bad) = timesteps.iter().find(|&&t| t < 0 || t > max) {
            return Err(SchedulerError::Unsupported(format!(
                "timestep {bad} from steps_offset {} is outside 0..{train}",
                config.steps_offset
            )));
        }
        timesteps
            .iter()
            .map(|&t| interp(t as f64, train_sigmas))
            .collect()
    };
    let mut sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
    sigmas.push(if config.final_sigma_zero()? {
        0.0
    } else {
        train_sigmas[0]
    });
    Ok(MultistepGrid { timesteps, sigmas })
}

#[derive(Debug, Clone)]
pub struct DpmSolverMultistep {
    config: SigmaConfig,
    solver_type: SolverType,
    train_sigmas: Vec<f32>,
    /// `num_train_timesteps` less the steps whose lambda is below `lambda_min_clipped`.
    last_timestep: usize,
    timesteps: Vec<i64>,
    sigmas: Vec<f32>,
    /// The data predictions of the previous and current step (oldest first).
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
}

impl DpmSolverMultistep {
    pub fn new(config: SigmaConfig) -> std::result::Result<Self, SchedulerError> {
        config.refuse_unimplemented("DPMSolverMultistepScheduler")?;
        // diffusers maps "deis" to dpmsolver++; the other algorithms are not DPM-Solver++.
        if !matches!(config.algorithm_type.as_str(), "dpmsolver++" | "deis") {
            return Err(unsupported("algorithm_type", &config.algorithm_type));
        }
        let solver_type = match config.solver_type.as_deref() {
            None | Some("midpoint" | "bh1" | "bh2" | "logrho") => SolverType::Midpoint,
            Some("heun") => SolverType::Heun,
            Some(other) => return Err(unsupported("solver_type", other)),
        };
        if !(1..=2).contains(&config.solver_order) {
            return Err(unsupported("solver_order", config.solver_order));
        }
        if let Some(v) = config.variance_type.as_deref() {
            return Err(unsupported("variance_type", v));
        }
        config.final_sigma_zero()?;
        let alphas_cumprod = config.train_schedule().sigma_alphas_cumprod()?;
        let train_sigmas = train_sigmas(&alphas_cumprod);
        let clipped = match config.lambda_min_clipped {
            // torch.searchsorted over the ascending (flipped) lambdas: how many lie below.
            Some(min) => alphas_cumprod
                .iter()
                .filter(|&&a| ((a.sqrt().ln() - (1.0 - a).sqrt().ln()) as f64) < min)
                .count(),
            None => 0,
        };
        let last_timestep = config.num_train_timesteps - clipped;
        Ok(Self {
            model_outputs: vec![None; config.solver_order],
            config,
            solver_type,
            train_sigmas,
            last_timestep,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            lower_order_nums: 0,
        })
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn first_order(&self, i: usize, x0: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[i + 1]);
        let (_, sigma_s, lambda_s) = alpha_sigma_lambda(self.sigmas[i]);
        let h = lambda_t - lambda_s;
        lin2(
            sigma_t / sigma_s,
            sample,
            -(alpha_t * ((-h).exp() - 1.0)),
            x0,
        )
    }

    fn second_order(&self, i: usize, m0: &Tensor, m1: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[i + 1]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[i]);
        let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[i - 1]);
        let (h, h_0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
        let r0 = h_0 / h;
        let d1 = ((m0 - m1)? * (1.0 / r0) as f64)?;
        let phi = alpha_t * ((-h).exp() - 1.0);
        let x = lin2(sigma_t / sigma_s0, sample, -phi, m0)?;
        let d1_coef = match self.solver_type {
            SolverType::Midpoint => -(0.5 * phi),
            SolverType::Heun => alpha_t * (((-h).exp() - 1.0) / h + 1.0),
        };
        x + (d1 * d1_coef as f64)?
    }
}

impl Sampler for DpmSolverMultistep {
    fn name(&self) -> SchedulerName {
        SchedulerName::DpmSolverMultistep
    }

    fn set_timesteps(&mut self, steps: usize) -> std::result::Result<Vec<f64>, SchedulerError> {
        let grid = multistep_grid(
            &self.config,
            &self.train_sigmas,
            steps,
            self.last_timestep,
            self.last_timestep / (steps + 1),
            self.config.karras(),
            true,
        )?;
        self.timesteps = grid.timesteps;
        self.sigmas = grid.sigmas;
        self.model_outputs = vec![None; self.config.solver_order];
        self.lower_order_nums = 0;
        Ok(self.timesteps.iter().map(|&t| t as f64).collect())
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = self.timesteps.len();
        if step_index >= n {
            bail!("step {step_index} is outside the {n} scheduled steps");
        }
        let final_step = step_index == n - 1;
        let lower_order_final = final_step
            && (self.config.euler_at_final
                || (self.config.lower_order_final && n < 15)
                || self.config.final_sigma_zero().unwrap_or(true));
        // (diffusers' `lower_order_second` only lowers order 3 to 2; we run at most order 2.)
        let x0 = data_prediction(
            self.config.prediction_type,
            model_output,
            sample,
            self.sigmas[step_index],
        )?;
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().expect("solver_order >= 1") = Some(x0.clone());
        let first = self.config.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final;
        let prev = if first {
            self.first_order(step_index, &x0, sample)?
        } else {
            let k = self.model_outputs.len();
            let Some(m1) = self.model_outputs[k - 2].clone() else {
                bail!("DPM-Solver second order step without a previous output")
            };
            self.second_order(step_index, &x0, &m1, sample)?
        };
        if self.lower_order_nums < self.config.solver_order {
            self.lower_order_nums += 1;
        }
        Ok(prev)
    }
}
