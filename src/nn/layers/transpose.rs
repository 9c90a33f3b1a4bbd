//! Transposed dense convolution (up-sampling).

use super::*;

/// Transposed dense convolution, `W: [Ci, Co, kt, ky, kx]` (PyTorch's layout). Its forward pass
/// is the input-gradient of a convolution from the (larger) output to the input:
/// `out = (in − 1)·s − 2p + d(k − 1) + 1 + output_padding` per axis.
pub struct ConvTranspose {
    pub ci: usize,
    pub co: usize,
    pub g: Geom,
    pub output_padding: [usize; 3],
    pub w: Param,
    pub b: Option<Param>,
    x: Option<Tensor>,
}

impl ConvTranspose {
    pub fn new(
        ci: usize,
        co: usize,
        g: Geom,
        output_padding: [usize; 3],
        w: Vec<f32>,
        bias: bool,
    ) -> Self {
        let k = g.k;
        ConvTranspose {
            ci,
            co,
            g,
            output_padding,
            w: Param::new("weight", &[ci, co, k[0], k[1], k[2]], w),
            b: bias.then(|| Param::new("bias", &[co], vec![0.0; co])),
            x: None,
        }
    }

    /// The saved input, its dims, input and output extents and sizes, and `Co·kvol`, after
    /// checking `dy`'s shape.
    #[allow(clippy::type_complexity)]
    fn grad_dims(
        &self,
        dy: &Tensor,
    ) -> Result<
        (
            &Tensor,
            [usize; 5],
            [usize; 3],
            [usize; 3],
            usize,
            usize,
            usize,
        ),
        NnError,
    > {
        let x = saved(&self.x, "transposed conv")?;
        let d = x.dims5("transposed conv")?;
        let ind = [d[2], d[3], d[4]];
        let o = self.out_dims(ind)?;
        check_same(
            dy,
            &[d[0], self.co, o[0], o[1], o[2]],
            "transposed conv output gradient",
        )?;
        Ok((
            x,
            d,
            ind,
            o,
            ind.iter().product(),
            o.iter().product(),
            self.co * self.g.kvol(),
        ))
    }

    /// Output extent for an input extent `ind` (checked: the adjoint convolution maps it back).
    pub fn out_dims(&self, ind: [usize; 3]) -> Result<[usize; 3], NnError> {
        transposed_out_dims(&self.g, self.output_padding, ind)
    }
}

/// Output extent of a transposed convolution of geometry `g` and `output_padding` over an input
/// extent `ind`, `(in − 1)·s − 2p + d(k − 1) + 1 + output_padding` per axis, checked so that the
/// adjoint convolution maps it back onto `ind` (the CPU and GPU layers share it).
pub fn transposed_out_dims(
    g: &Geom,
    output_padding: [usize; 3],
    ind: [usize; 3],
) -> Result<[usize; 3], NnError> {
    let mut o = [0; 3];
    for a in 0..3 {
        let full = ind[a].saturating_sub(1) * g.stride[a]
            + g.dil[a] * (g.k[a] - 1)
            + 1
            + output_padding[a];
        if full <= 2 * g.pad[a] || ind[a] == 0 {
            return Err(NnError::Shape {
                what: format!("transposed convolution along axis {a}"),
                expected: vec![2 * g.pad[a] + 1],
                found: vec![full],
            });
        }
        o[a] = full - 2 * g.pad[a];
    }
    if g.out_dims(o)? != ind {
        return Err(NnError::Model(format!(
            "transposed convolution: output_padding {output_padding:?} is not smaller than the stride {:?}",
            g.stride
        )));
    }
    Ok(o)
}

impl Layer for ConvTranspose {
    fn forward(&mut self, x: &Tensor) -> Result<Tensor, NnError> {
        self.forward_owned(x.clone())
    }
    fn forward_owned(&mut self, x: Tensor) -> Result<Tensor, NnError> {
        let d = check_channels(&x, self.ci, "transposed conv")?;
        let ind = [d[2], d[3], d[4]];
        let o = self.out_dims(ind)?;
        let (nin, nout, k) = (
            ind.iter().product::<usize>(),
            o.iter().product::<usize>(),
            self.co * self.g.kvol(),
        );
        let data = per_sample(d[0], self.co * nout, |b, y| {
            let mut col = Scratch::new(k * nin);
            gemm(
                1.0,
                view(&self.w.value, self.ci, k).t(),
                view(&x.data[b * self.ci * nin..], self.ci, nin),
                0.0,
                &mut col,
            );
            col2im(&col, self.co, o, &self.g, ind, y);
            if let Some(bias) = &self.b {
                for (c, row) in y.chunks_mut(nout).enumerate() {
                    row.iter_mut().for_each(|v| *v += bias.value[c]);
                }
            }
        });
        self.x = Some(x);
        Tensor::from_vec(&[d[0], self.co, o[0], o[1], o[2]], data)
    }
    fn backward_input(&self, dy: &Tensor) -> Result<Tensor, NnError> {
        let (x, d, ind, o, nin, nout, k) = self.grad_dims(dy)?;
        let data = per_sample(d[0], self.ci * nin, |b, dx| {
            let mut col = Scratch::new(k * nin);
            im2col(
                &dy.data[b * self.co * nout..(b + 1) * self.co * nout],
                self.co,
                o,
                &self.g,
                ind,
                &mut col,
            );
            gemm(
                1.0,
                view(&self.w.value, self.ci, k),
                view(&col, k, nin),
                0.0,
                dx,
            );
        });
        Tensor::from_vec(&x.shape, data)
    }
    fn backward_weights(&mut self, dy: &Tensor) -> Result<(), NnError> {
        let (x, d, ind, o, nin, nout, k) = self.grad_dims(dy)?;
        let dw = sum_per_sample(d[0], self.ci * k, |b, dw| {
            let mut col = Scratch::new(k * nin);
            im2col(
                &dy.data[b * self.co * nout..(b + 1) * self.co * nout],
                self.co,
                o,
                &self.g,
                ind,
                &mut col,
            );
            gemm(
                1.0,
                view(&x.data[b * self.ci * nin..], self.ci, nin),
                view(&col, k, nin).t(),
                0.0,
                dw,
            );
        });
        self.w.grad.iter_mut().zip(dw).for_each(|(g, v)| *g += v);
        if let Some(bias) = &mut self.b {
            for b in 0..d[0] {
                for (c, row) in dy.data[b * self.co * nout..(b + 1) * self.co * nout]
                    .chunks(nout)
                    .enumerate()
                {
                    bias.grad[c] += sum8(row);
                }
            }
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
            "transposed conv {}→{} k{:?} s{:?} p{:?}",
            self.ci, self.co, self.g.k, self.g.stride, self.g.pad
        )
    }
}
