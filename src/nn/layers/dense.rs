//! `dense`: the usual convolution, every kernel entry trainable.

use super::*;

/// `dense`: the usual kernel `W[o, i, kt, ky, kx]`, every entry trainable.
pub struct DenseConv {
    pub core: ConvCore,
    pub w: Param,
    pub b: Option<Param>,
    x: Option<Tensor>,
}

impl DenseConv {
    pub fn new(core: ConvCore, w: Vec<f32>, bias: bool) -> Self {
        let k = core.g.k;
        let w = Param::new("weight", &[core.co, core.ci, k[0], k[1], k[2]], w);
        let b = bias.then(|| Param::new("bias", &[core.co], vec![0.0; core.co]));
        DenseConv {
            core,
            w,
            b,
            x: None,
        }
    }
}

impl Layer for DenseConv {
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        self.forward_owned(x.clone())
    }
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        let y = self
            .core
            .forward(&x, &self.w.value, self.b.as_ref().map(|b| &b.value[..]))?;
        self.x = Some(x);
        Ok(y)
    }
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        self.core
            .backward_input(saved(&self.x, "dense conv")?, dy, &self.w.value)
    }
    fn backward_weights(&mut self, dy: &Tensor) -> Result<(), NnError> {
        let (dw, db) = self
            .core
            .backward_weights(saved(&self.x, "dense conv")?, dy)?;
        self.w.grad.iter_mut().zip(dw).for_each(|(g, d)| *g += d);
        if let Some(b) = &mut self.b {
            b.grad.iter_mut().zip(db).for_each(|(g, d)| *g += d);
        }
        Ok(())
    }
    fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.w).chain(self.b.as_ref()).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.w)
            .chain(self.b.as_mut())
            .collect()
    }
    fn describe(&self) -> String {
        format!(
            "dense conv {}→{} k{:?} s{:?} p{:?} d{:?}",
            self.core.ci,
            self.core.co,
            self.core.g.k,
            self.core.g.stride,
            self.core.g.pad,
            self.core.g.dil
        )
    }
}
