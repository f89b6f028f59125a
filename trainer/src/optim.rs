//! AdamW whose state can be written and read back. candle-nn's `AdamW` keeps its moments private,
//! so a run resumed from its checkpoint would restart the moments at zero and drift from an
//! uninterrupted run; this one checkpoints them beside the weights.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Tensor, Var, backprop::GradStore};

/// PyTorch's `torch.optim.AdamW` update and defaults (β 0.9/0.999, ε 1e-8, weight decay 0.01).
#[derive(Clone, Debug, PartialEq)]
pub struct Hyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Hyper {
    pub fn with_lr(lr: f64) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

pub struct AdamW {
    pub hyper: Hyper,
    /// Updates done so far (the bias corrections depend on it).
    pub t: u64,
    /// First and second moments, by parameter name.
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
}

const M: &str = "optimizer.m.";
const V: &str = "optimizer.v.";

impl AdamW {
    pub fn new(params: &BTreeMap<String, Var>, hyper: Hyper) -> candle_core::Result<Self> {
        let zeros = || -> candle_core::Result<BTreeMap<String, Tensor>> {
            params.iter().map(|(n, p)| Ok((n.clone(), p.as_tensor().zeros_like()?))).collect()
        };
        Ok(Self { hyper, t: 0, m: zeros()?, v: zeros()? })
    }

    pub fn step(&mut self, params: &BTreeMap<String, Var>, grads: &GradStore) -> candle_core::Result<()> {
        self.t += 1;
        let h = self.hyper.clone();
        let (c1, c2) = (1.0 - h.beta1.powi(self.t as i32), 1.0 - h.beta2.powi(self.t as i32));
        for (name, var) in params {
            let Some(g) = grads.get(var) else { continue };
            if var.device().is_cpu() {
                self.step_host(name, var, g, (c1, c2))?;
                continue;
            }
            let m = ((&self.m[name] * h.beta1)? + (g * (1.0 - h.beta1))?)?;
            let v = ((&self.v[name] * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
            let decayed = (var.as_tensor() * (1.0 - h.lr * h.weight_decay))?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + h.eps)?)?;
            var.set(&(decayed - (update * h.lr)?)?)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }

    /// The same update as one loop over host memory: on the CPU, ten tensor operations that each
    /// allocate and write a parameter-sized buffer cost more than the forward and backward pass
    /// of a small model (docs/benchmarks.md).
    fn step_host(
        &mut self,
        name: &str,
        var: &Var,
        g: &Tensor,
        (c1, c2): (f64, f64),
    ) -> candle_core::Result<()> {
        let h = &self.hyper;
        let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (mut p, g, mut m, mut v) =
            (host(var.as_tensor())?, host(g)?, host(&self.m[name])?, host(&self.v[name])?);
        let (b1, b2, lr, eps) = (h.beta1 as f32, h.beta2 as f32, h.lr as f32, h.eps as f32);
        let (c1, c2, decay) = (c1 as f32, c2 as f32, (1.0 - h.lr * h.weight_decay) as f32);
        for i in 0..p.len() {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            p[i] = p[i] * decay - lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
        }
        let (shape, dev) = (var.shape().clone(), var.device().clone());
        var.set(&Tensor::from_vec(p, &shape, &dev)?)?;
        self.m.insert(name.to_owned(), Tensor::from_vec(m, &shape, &dev)?);
        self.v.insert(name.to_owned(), Tensor::from_vec(v, &shape, &dev)?);
        Ok(())
    }

    /// The moments, named for a checkpoint.
    pub fn state(&self) -> impl Iterator<Item = (String, &Tensor)> {
        let m = self.m.iter().map(|(n, t)| (format!("{M}{n}"), t));
        m.chain(self.v.iter().map(|(n, t)| (format!("{V}{n}"), t)))
    }

    /// Takes the moments back from a checkpoint; every parameter must have both.
    pub fn restore(&mut self, t: u64, tensors: &HashMap<String, Tensor>) -> Result<(), String> {
        for (prefix, map) in [(M, &mut self.m), (V, &mut self.v)] {
            for (name, slot) in map.iter_mut() {
                let saved = tensors.get(&format!("{prefix}{name}")).ok_or(format!("no {prefix}{name}"))?;
                if saved.dims() != slot.dims() {
                    return Err(format!(
                        "{prefix}{name} has shape {:?}, the model {:?}",
                        saved.dims(),
                        slot.dims()
                    ));
                }
                *slot = saved.clone();
            }
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One step by hand: with g = 2 and t = 1 the bias-corrected update is lr·sign(g).
    #[test]
    fn the_first_step_matches_the_formula() {
        let dev = Device::Cpu;
        let p = Var::from_tensor(&Tensor::new(&[1.0f32], &dev).unwrap()).unwrap();
        let params = BTreeMap::from([("w".to_string(), p.clone())]);
        let mut opt = AdamW::new(&params, Hyper::with_lr(0.1)).unwrap();
        let loss = (p.as_tensor() * 2.0).unwrap().sum_all().unwrap();
        opt.step(&params, &loss.backward().unwrap()).unwrap();
        let got = p.as_tensor().to_vec1::<f32>().unwrap()[0];
        // decay 1·(1 − 0.1·0.01), then m̂ / √v̂ = 2 / √4 = 1, times lr
        let want = 0.999 - 0.1;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert_eq!(opt.t, 1);
    }

    #[test]
    fn restore_names_what_is_missing() {
        let dev = Device::Cpu;
        let p = Var::from_tensor(&Tensor::new(&[1.0f32, 2.0], &dev).unwrap()).unwrap();
        let params = BTreeMap::from([("w".to_string(), p)]);
        let mut opt = AdamW::new(&params, Hyper::with_lr(0.1)).unwrap();
        let state: HashMap<String, Tensor> = opt.state().map(|(n, t)| (n, t.clone())).collect();
        opt.restore(5, &state).unwrap();
        assert_eq!(opt.t, 5);
        let e = opt.restore(5, &HashMap::new()).unwrap_err();
        assert_eq!(e, "no optimizer.m.w");
    }
}
