//! AdamW whose state can be written and read back. candle-nn's `AdamW` keeps its moments private,
//! so a run resumed from its checkpoint would restart the moments at zero and drift from an
//! uninterrupted run; this one checkpoints them beside the weights.

use std::collections::{BTreeMap, HashMap};

use std::cell::RefCell;

use candle_core::{CpuStorage, Layout, Shape, Tensor, Var, backprop::GradStore};
use rayon::prelude::*;

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
    moments: BTreeMap<String, Moments>,
}

/// A parameter's moments: in host memory next to a CPU parameter (updated in place, in one
/// pass), as tensors next to a GPU one.
enum Moments {
    Host { shape: Shape, m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

const M: &str = "optimizer.m.";
const V: &str = "optimizer.v.";
/// Elements per task of the parallel host update: big parameters are split across rayon's
/// threads, small ones (biases) are not worth a task.
const CHUNK: usize = 16 * 1024;

impl AdamW {
    pub fn new(params: &BTreeMap<String, Var>, hyper: Hyper) -> candle_core::Result<Self> {
        let mut moments = BTreeMap::new();
        for (n, p) in params {
            let m = if p.device().is_cpu() {
                let len = p.elem_count();
                Moments::Host { shape: p.shape().clone(), m: vec![0.0; len], v: vec![0.0; len] }
            } else {
                Moments::Device { m: p.as_tensor().zeros_like()?, v: p.as_tensor().zeros_like()? }
            };
            moments.insert(n.clone(), m);
        }
        Ok(Self { hyper, t: 0, moments })
    }

    pub fn step(&mut self, params: &BTreeMap<String, Var>, grads: &GradStore) -> candle_core::Result<()> {
        self.t += 1;
        let h = self.hyper.clone();
        let c = (1.0 - h.beta1.powi(self.t as i32), 1.0 - h.beta2.powi(self.t as i32));
        for (name, var) in params {
            let Some(g) = grads.get(var) else { continue };
            match self.moments.get_mut(name) {
                Some(Moments::Host { m, v, .. }) => {
                    let op = HostUpdate { h: &h, c, m: RefCell::new(m), v: RefCell::new(v) };
                    var.as_tensor().inplace_op2(&g.contiguous()?, &op)?;
                }
                Some(Moments::Device { m, v }) => (*m, *v) = tensor_update(&h, c, var, g, m, v)?,
                None => candle_core::bail!("no moments for parameter {name}"),
            }
        }
        Ok(())
    }

    /// The moments, named for a checkpoint.
    pub fn state(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (n, mo) in &self.moments {
            let (m, v) = match mo {
                Moments::Host { shape, m, v } => {
                    let t = |x: &Vec<f32>| Tensor::from_slice(x, shape, &candle_core::Device::Cpu);
                    (t(m)?, t(v)?)
                }
                Moments::Device { m, v } => (m.clone(), v.clone()),
            };
            out.push((format!("{M}{n}"), m));
            out.push((format!("{V}{n}"), v));
        }
        Ok(out)
    }

    /// Takes the moments back from a checkpoint; every parameter must have both.
    pub fn restore(&mut self, t: u64, tensors: &HashMap<String, Tensor>) -> Result<(), String> {
        for (name, mo) in self.moments.iter_mut() {
            let saved = |prefix: &str, dims: &[usize]| -> Result<Tensor, String> {
                let s = tensors.get(&format!("{prefix}{name}")).ok_or(format!("no {prefix}{name}"))?;
                if s.dims() != dims {
                    return Err(format!("{prefix}{name} has shape {:?}, the model {dims:?}", s.dims()));
                }
                Ok(s.clone())
            };
            match mo {
                Moments::Host { shape, m, v } => {
                    let host = |t: Tensor| {
                        t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| e.to_string())
                    };
                    let (new_m, new_v) = (host(saved(M, shape.dims())?)?, host(saved(V, shape.dims())?)?);
                    (*m, *v) = (new_m, new_v);
                }
                Moments::Device { m, v } => {
                    let (new_m, new_v) = (saved(M, m.dims())?, saved(V, v.dims())?);
                    (*m, *v) = (new_m, new_v);
                }
            }
        }
        self.t = t;
        Ok(())
    }
}

/// PyTorch's AdamW as tensor operations (the GPU path): returns the new moments.
fn tensor_update(
    h: &Hyper,
    (c1, c2): (f64, f64),
    var: &Var,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let m = ((m * h.beta1)? + (g * (1.0 - h.beta1))?)?;
    let v = ((v * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
    let decayed = (var.as_tensor() * (1.0 - h.lr * h.weight_decay))?;
    let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + h.eps)?)?;
    var.set(&(decayed - (update * h.lr)?)?)?;
    Ok((m, v))
}

/// A stretch of parameter, gradient, first and second moment, as rayon's zip hands them out.
type Slices<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a mut [f32]);

/// The same update in one pass over host memory, the parameter written in place: on the CPU,
/// ten tensor operations that each allocate and write a parameter-sized buffer — or copying
/// parameter, gradient and moments out and back — cost more than the forward and backward
/// pass of a small model (docs/benchmarks.md).
struct HostUpdate<'a> {
    h: &'a Hyper,
    c: (f64, f64),
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
}

impl candle_core::InplaceOp2 for HostUpdate<'_> {
    fn name(&self) -> &'static str {
        "nova-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("AdamW on the CPU takes f32 parameters")
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("AdamW on the CPU takes contiguous parameters and gradients")
        };
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        if p.len() != g.len() || p.len() != m.len() || p.len() != v.len() {
            candle_core::bail!("AdamW: parameter, gradient and moments differ in size")
        }
        let h = self.h;
        let (b1, b2, lr, eps) = (h.beta1 as f32, h.beta2 as f32, h.lr as f32, h.eps as f32);
        let (c1, c2, decay) = (self.c.0 as f32, self.c.1 as f32, (1.0 - h.lr * h.weight_decay) as f32);
        let one = |(((p, g), m), v): Slices<'_>| {
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                p[i] = p[i] * decay - lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
            }
        };
        if p.len() <= CHUNK {
            one((((p, g), m.as_mut_slice()), v.as_mut_slice()));
        } else {
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .for_each(one);
        }
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
        let state: HashMap<String, Tensor> = opt.state().unwrap().into_iter().collect();
        opt.restore(5, &state).unwrap();
        assert_eq!(opt.t, 5);
        let e = opt.restore(5, &HashMap::new()).unwrap_err();
        assert_eq!(e, "no optimizer.m.w");
    }

    /// The in-place, parallel host update gives what the tensor operations give, over a
    /// parameter big enough to be split across threads, for a few steps.
    #[test]
    fn the_host_update_matches_the_tensor_update() {
        let dev = Device::Cpu;
        let n = 3 * CHUNK + 17;
        let init: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let a = Var::from_tensor(&Tensor::from_slice(&init, n, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::from_slice(&init, n, &dev).unwrap()).unwrap();
        let params = BTreeMap::from([("w".to_string(), a.clone())]);
        let mut opt = AdamW::new(&params, Hyper::with_lr(0.01)).unwrap();
        let (mut m, mut v) = (b.as_tensor().zeros_like().unwrap(), b.as_tensor().zeros_like().unwrap());
        let h = Hyper::with_lr(0.01);
        for t in 1..=3 {
            let loss = |p: &Var| (p.as_tensor().sqr().unwrap() * 0.5).unwrap().sum_all().unwrap();
            opt.step(&params, &loss(&a).backward().unwrap()).unwrap();
            let grads = loss(&b).backward().unwrap();
            let c = (1.0 - h.beta1.powi(t), 1.0 - h.beta2.powi(t));
            (m, v) = tensor_update(&h, c, &b, grads.get(&b).unwrap(), &m, &v).unwrap();
        }
        let (x, y) = (a.as_tensor().to_vec1::<f32>().unwrap(), b.as_tensor().to_vec1::<f32>().unwrap());
        let worst = x.iter().zip(&y).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "largest difference {worst}");
        let state: HashMap<String, Tensor> = opt.state().unwrap().into_iter().collect();
        let diff = (&state["optimizer.v.w"] - &v).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6, "second moments differ");
    }
}
