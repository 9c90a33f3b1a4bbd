//! A learned window error model: the logarithm of a window's true error (relative L2) as a
//! quadratic function of a few signals of the window, fitted by ridge regression. Stored with
//! the calibration of the indicator that uses it (`grid_learned`), so that a model file holds
//! the estimator and the rule that turns its predictions into a tolerance together.
//!
//! Ridge on a fixed quadratic basis rather than a small network: the fit is one linear solve,
//! the same bits on every machine and rank count, with no training schedule to tune. Offline
//! on the fine model (docs/coupling.md) the quadratic basis ranked windows of held-out
//! scenarios at 0.95, the linear one at 0.93.

use serde::{Deserialize, Serialize};

/// `ln(error) ≈ b0 + Σ b_k φ_k(z)`, `z` the standardized inputs and `φ` the inputs and their
/// pairwise products (`quadratic`) or the inputs alone, each standardized on the fit set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorModel {
    /// What the inputs are (for the error message when a window gives another count).
    pub inputs: String,
    pub quadratic: bool,
    /// The ridge penalty (on standardized basis functions) the model was fitted with.
    pub lambda: f64,
    /// Mean and standard deviation of each input, then of each basis function, on the fit set.
    pub input_mean: Vec<f64>,
    pub input_scale: Vec<f64>,
    pub basis_mean: Vec<f64>,
    pub basis_scale: Vec<f64>,
    pub intercept: f64,
    pub coefficients: Vec<f64>,
}

/// The basis functions of the standardized inputs `z`.
fn basis(z: &[f64], quadratic: bool) -> Vec<f64> {
    let mut b = z.to_vec();
    if quadratic {
        for i in 0..z.len() {
            for j in i..z.len() {
                b.push(z[i] * z[j]);
            }
        }
    }
    b
}

/// Column means and standard deviations of `rows` (a constant column gets scale 1).
fn moments(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let m = rows[0].len();
    let mean: Vec<f64> = (0..m)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let scale = (0..m)
        .map(|j| {
            let v = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
            if v > 0.0 {
                v.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    (mean, scale)
}

fn standardize(x: &[f64], mean: &[f64], scale: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(mean.iter().zip(scale))
        .map(|(v, (m, s))| (v - m) / s)
        .collect()
}

/// Solves `a x = b` for a symmetric positive definite `a` (row-major, `n × n`) by Cholesky;
/// `None` when `a` is not positive definite to working precision.
pub fn cholesky_solve(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                if d.is_nan() || d <= 0.0 {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    Some(x)
}

impl ErrorModel {
    /// Fits `ln(errors)` on `inputs` (one row a window). Refuses fewer windows than two, rows
    /// of unequal length, non-finite inputs and errors that are not positive and finite.
    pub fn fit(
        name: &str,
        inputs: &[Vec<f64>],
        errors: &[f64],
        quadratic: bool,
        lambda: f64,
    ) -> Result<Self, String> {
        if inputs.len() != errors.len() || inputs.len() < 2 {
            return Err(format!(
                "an error model needs two or more windows with one error each: {} windows, {} errors",
                inputs.len(),
                errors.len()
            ));
        }
        let m = inputs[0].len();
        if m == 0 || inputs.iter().any(|r| r.len() != m) {
            return Err("the windows give input rows of different or zero length".into());
        }
        if inputs.iter().flatten().any(|v| !v.is_finite()) {
            return Err("a window's error-model input is not finite".into());
        }
        if let Some(e) = errors.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
            return Err(format!(
                "a window's true error is {e}: the model fits its logarithm"
            ));
        }
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(format!("the ridge penalty {lambda} is not positive"));
        }
        let (input_mean, input_scale) = moments(inputs);
        let rows: Vec<Vec<f64>> = inputs
            .iter()
            .map(|r| basis(&standardize(r, &input_mean, &input_scale), quadratic))
            .collect();
        let (basis_mean, basis_scale) = moments(&rows);
        let p = basis_mean.len();
        let y: Vec<f64> = errors.iter().map(|e| e.ln()).collect();
        let intercept = y.iter().sum::<f64>() / y.len() as f64;
        // Normal equations of the centred problem: the intercept is the mean, unpenalized.
        let mut ata = vec![0.0; p * p];
        let mut aty = vec![0.0; p];
        for (r, yk) in rows.iter().zip(&y) {
            let z = standardize(r, &basis_mean, &basis_scale);
            for i in 0..p {
                aty[i] += z[i] * (yk - intercept);
                for j in 0..=i {
                    ata[i * p + j] += z[i] * z[j];
                }
            }
        }
        for i in 0..p {
            ata[i * p + i] += lambda;
            for j in 0..i {
                ata[j * p + i] = ata[i * p + j];
            }
        }
        let coefficients = cholesky_solve(&ata, &aty)
            .ok_or("the ridge normal equations are not positive definite")?;
        Ok(ErrorModel {
            inputs: name.into(),
            quadratic,
            lambda,
            input_mean,
            input_scale,
            basis_mean,
            basis_scale,
            intercept,
            coefficients,
        })
    }

    /// The predicted `ln(error)` of a window with these inputs.
    pub fn predict_ln(&self, x: &[f64]) -> Result<f64, String> {
        if x.len() != self.input_mean.len() {
            return Err(format!(
                "the window gives {} inputs ({}), the error model was fitted on {}: the model's \
                 t_in / t_out differ from the fit's",
                x.len(),
                self.inputs,
                self.input_mean.len()
            ));
        }
        let b = basis(
            &standardize(x, &self.input_mean, &self.input_scale),
            self.quadratic,
        );
        if b.len() != self.coefficients.len() || self.basis_mean.len() != b.len() {
            return Err("the stored error model is inconsistent (basis size)".into());
        }
        let z = standardize(&b, &self.basis_mean, &self.basis_scale);
        Ok(self.intercept
            + z.iter()
                .zip(&self.coefficients)
                .map(|(a, c)| a * c)
                .sum::<f64>())
    }
}

/// Ranks of `v` (1-based; ties share their mean rank).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}
