//! `UniPCMultistepScheduler` (Zhao et al. 2023) with diffusers' defaults: data prediction
//! (`predict_x0`), the B(h) of `solver_type` bh2 (or bh1), orders 1 and 2, the UniC corrector
//! applied to each new sample before the UniP predictor steps on, `lower_order_final`.

use candle_core::{bail, Result, Tensor};
use headshot_core::SchedulerName;

use super::dpm_solver::{alpha_sigma_lambda, data_prediction, multistep_grid};
use super::schedule::train_sigmas;
use super::sigma_config::{unsupported, SigmaConfig};
use super::{lin2, Sampler, SchedulerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BhVariant {
    Bh1,
    Bh2,
}

#[derive(Debug, Clone)]
pub struct UniPcMultistep {
    config: SigmaConfig,
    variant: BhVariant,
    train_sigmas: Vec<f32>,
    timesteps: Vec<i64>,
    sigmas: Vec<f32>,
    /// The data predictions of the last `solver_order` steps (oldest first).
    model_outputs: Vec<Option<Tensor>>,
    /// The (corrected) sample the last predictor started from, and its order.
    last_sample: Option<Tensor>,
    this_order: usize,
    lower_order_nums: usize,
}

/// The step's exponential integrator terms, from `h` (lambda_t - lambda_s0).
struct Phi {
    /// `expm1(-h)`.
    h_phi_1: f32,
    b_h: f32,
    hh: f32,
}

impl UniPcMultistep {
    pub fn new(config: SigmaConfig) -> std::result::Result<Self, SchedulerError> {
        config.refuse_unimplemented("UniPCMultistepScheduler")?;
        let variant = match config.solver_type.as_deref() {
            None | Some("bh2" | "midpoint" | "heun" | "logrho") => BhVariant::Bh2,
            Some("bh1") => BhVariant::Bh1,
            Some(other) => return Err(unsupported("solver_type", other)),
        };
        if !config.predict_x0 {
            return Err(unsupported("predict_x0", false));
        }
        if !(1..=2).contains(&config.solver_order) {
            return Err(unsupported("solver_order", config.solver_order));
        }
        config.final_sigma_zero()?;
        let train_sigmas = train_sigmas(&config.train_schedule().sigma_alphas_cumprod()?);
        Ok(Self {
            model_outputs: vec![None; config.solver_order],
            config,
            variant,
            train_sigmas,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            last_sample: None,
            this_order: 1,
            lower_order_nums: 0,
        })
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn phi(&self, h: f32) -> Phi {
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.variant {
            BhVariant::Bh1 => hh,
            BhVariant::Bh2 => hh.exp_m1(),
        };
        Phi { h_phi_1, b_h, hh }
    }

    fn output(&self, back: usize) -> Result<&Tensor> {
        let k = self.model_outputs.len();
        match k
            .checked_sub(back + 1)
            .and_then(|i| self.model_outputs[i].as_ref())
        {
            Some(t) => Ok(t),
            None => bail!("UniPC step without the model output {back} steps back"),
        }
    }

    /// UniP from `x` at step `i` to step `i + 1`.
    fn predictor(&self, i: usize, x: &Tensor, order: usize) -> Result<Tensor> {
        let m0 = self.output(0)?;
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[i + 1]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[i]);
        let h = lambda_t - lambda_s0;
        let phi = self.phi(h);
        let x_t = lin2(sigma_t / sigma_s0, x, -(alpha_t * phi.h_phi_1), m0)?;
        if order < 2 {
            return Ok(x_t);
        }
        let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[i - 1]);
        let rk = (lambda_s1 - lambda_s0) / h;
        let d1 = ((self.output(1)? - m0)? / rk as f64)?;
        // rhos_p = [0.5] at order 2.
        let pred_res = (d1 * 0.5)?;
        x_t - (pred_res * (alpha_t * phi.b_h) as f64)?
    }

    /// UniC: the sample at step `i` again, from the last predictor's start `x` with the new
    /// output `model_t` (diffusers computes it from `last_sample`, not from the prediction).
    fn corrector(&self, i: usize, model_t: &Tensor, x: &Tensor, order: usize) -> Result<Tensor> {
        let m0 = self.output(0)?;
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[i]);
        let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[i - 1]);
        let h = lambda_t - lambda_s0;
        let phi = self.phi(h);
        // b_k = h_phi_k * k! / B(h), h_phi_k from h_phi_1 by the recurrence.
        let mut b = Vec::with_capacity(order);
        let mut h_phi_k = phi.h_phi_1 / phi.hh - 1.0;
        let mut factorial = 1.0f32;
        for k in 1..=order {
            b.push(h_phi_k * factorial / phi.b_h);
            factorial *= (k + 1) as f32;
            h_phi_k = h_phi_k / phi.hh - 1.0 / factorial;
        }
        let x_t_ = lin2(sigma_t / sigma_s0, x, -(alpha_t * phi.h_phi_1), m0)?;
        let d1_t = (model_t - m0)?;
        let correction = if order == 1 {
            (d1_t * 0.5)?
        } else {
            let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[i - 2]);
            let rk = (lambda_s1 - lambda_s0) / h;
            let d1 = ((self.output(1)? - m0)? / rk as f64)?;
            // Solve [[1, 1], [rk, 1]] rhos = b (torch.linalg.solve, here in closed form).
            let (rk64, b0, b1) = (rk as f64, b[0] as f64, b[1] as f64);
            let rho0 = ((b0 - b1) / (1.0 - rk64)) as f32;
            let rho1 = (b0 - (b0 - b1) / (1.0 - rk64)) as f32;
            lin2(rho0, &d1, rho1, &d1_t)?
        };
        x_t_ - (correction * (alpha_t * phi.b_h) as f64)?
    }
}

impl Sampler for UniPcMultistep {
    fn name(&self) -> SchedulerName {
        SchedulerName::UniPcMultistep
    }

    fn set_timesteps(&mut self, steps: usize) -> std::result::Result<Vec<f64>, SchedulerError> {
        let train = self.config.num_train_timesteps;
        let grid = multistep_grid(
            &self.config,
            &self.train_sigmas,
            steps,
            train,
            train / (steps + 1),
            self.config.karras(),
            false,
        )?;
        self.timesteps = grid.timesteps;
        self.sigmas = grid.sigmas;
        self.model_outputs = vec![None; self.config.solver_order];
        self.last_sample = None;
        self.this_order = 1;
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
        let converted = data_prediction(
            self.config.prediction_type,
            model_output,
            sample,
            self.sigmas[step_index],
        )?;
        let use_corrector = step_index > 0
            && !self.config.disable_corrector.contains(&(step_index - 1))
            && self.last_sample.is_some();
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(step_index, &converted, last, self.this_order)?,
            _ => sample.clone(),
        };
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().expect("solver_order >= 1") = Some(converted);
        let order = if self.config.lower_order_final {
            self.config.solver_order.min(n - step_index)
        } else {
            self.config.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        let prev = self.predictor(step_index, &sample, self.this_order)?;
        self.last_sample = Some(sample);
        if self.lower_order_nums < self.config.solver_order {
            self.lower_order_nums += 1;
        }
        Ok(prev)
    }
}
