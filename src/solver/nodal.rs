//! Dirichlet values given node by node (a submodel's interface, a host program's boundary):
//! which rows take them, setting them all or some, their start values, and saving what was set.

use super::{SolverError, WaveSolver};

/// What a host has set on the node-by-node rows: their values and which were set (the others
/// still follow their boundary's function). Part of a hosted simulation's saved state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodalValues {
    pub values: Vec<f64>,
    pub taken: Vec<bool>,
}

impl WaveSolver {
    /// The owned rows whose Dirichlet values are given node by node
    /// ([`super::BoundaryKind::DirichletNodal`] and `External`), in the order [`WaveSolver::set_nodal_dirichlet`]
    /// takes their values (ascending local row; `layout().global` maps them to mesh nodes).
    pub fn nodal_dirichlet_rows(&self) -> &[u32] {
        &self.nodal_rows
    }

    /// Values the next step imposes on [`WaveSolver::nodal_dirichlet_rows`] at its new time
    /// level `t + dt`; kept until replaced (so a constant value is set once).
    pub fn set_nodal_dirichlet(&mut self, values: &[f64]) -> Result<(), SolverError> {
        self.check_nodal("node-by-node Dirichlet values", values)?;
        self.nodal_next.copy_from_slice(values);
        self.nodal_taken.fill(true);
        Ok(())
    }

    /// Values the next step imposes on the slots `slots` (indices into
    /// [`WaveSolver::nodal_dirichlet_rows`]); those slots stop following their boundary's
    /// function, the others keep what they had.
    pub fn set_nodal_dirichlet_slots(
        &mut self,
        slots: &[u32],
        values: &[f64],
    ) -> Result<(), SolverError> {
        let what = "node-by-node Dirichlet values";
        if values.len() != slots.len() {
            return Err(SolverError::Shape {
                what,
                expected: slots.len(),
                found: values.len(),
            });
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(SolverError::NonFiniteInput { what, value: *v });
        }
        let n = self.nodal_rows.len();
        if let Some(&k) = slots.iter().find(|&&k| k as usize >= n) {
            return Err(SolverError::Shape {
                what: "node-by-node Dirichlet slot",
                expected: n,
                found: k as usize,
            });
        }
        for (&k, &v) in slots.iter().zip(values) {
            self.nodal_next[k as usize] = v;
            self.nodal_taken[k as usize] = true;
        }
        Ok(())
    }

    /// What has been set on the node-by-node rows (for a saved state).
    pub fn nodal_values(&self) -> NodalValues {
        NodalValues {
            values: self.nodal_next.clone(),
            taken: self.nodal_taken.clone(),
        }
    }

    /// Sets the node-by-node rows back to `v` (from [`WaveSolver::nodal_values`] on the same
    /// layout).
    pub fn restore_nodal_values(&mut self, v: &NodalValues) -> Result<(), SolverError> {
        let n = self.nodal_rows.len();
        if v.values.len() != n || v.taken.len() != n {
            return Err(SolverError::Shape {
                what: "saved node-by-node Dirichlet values",
                expected: n,
                found: v.values.len(),
            });
        }
        self.nodal_next.copy_from_slice(&v.values);
        self.nodal_taken.copy_from_slice(&v.taken);
        Ok(())
    }

    /// Values at t = 0 and t = −dt that the next `set_initial` gives the node-by-node Dirichlet
    /// rows (without this call they start from `u0` and the Taylor start like other nodes).
    pub fn set_nodal_dirichlet_start(
        &mut self,
        at_0: &[f64],
        at_minus_dt: &[f64],
    ) -> Result<(), SolverError> {
        self.check_nodal("node-by-node Dirichlet values at t = 0", at_0)?;
        self.check_nodal("node-by-node Dirichlet values at t = -dt", at_minus_dt)?;
        self.nodal_start = Some((at_0.to_vec(), at_minus_dt.to_vec()));
        Ok(())
    }

    fn check_nodal(&self, what: &'static str, values: &[f64]) -> Result<(), SolverError> {
        if values.len() != self.nodal_rows.len() {
            return Err(SolverError::Shape {
                what,
                expected: self.nodal_rows.len(),
                found: values.len(),
            });
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(SolverError::NonFiniteInput { what, value: *v });
        }
        Ok(())
    }
}
