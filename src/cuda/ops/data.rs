//! The frame set kept on the device and the batch gather (kernels/data.cu).

use super::super::{driver_err, CudaError, Gpu};
use super::{need, DevBuf};
use crate::cuda::Kernel;
use cudarc::driver::PushKernelArg;
use std::ops::Range;

/// A frame set resident on the device: `frames` frames of `n` values each, normalised.
pub struct DevFrames {
    buf: DevBuf,
    frames: usize,
    n: usize,
}

/// Windows on the device: each one's first frame as an index into a [`DevFrames`], checked when
/// made so that every frame a window spans (`span` of them) lies inside the frame set.
pub struct DevWindows {
    first: cudarc::driver::CudaSlice<u32>,
    len: usize,
    span: usize,
    frames: usize,
}

impl DevWindows {
    /// How many windows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Gpu {
    /// Copies `values` (`values.len() / n` frames of `n` values) to the device.
    pub fn frames_to_device(&self, values: &[f32], n: usize) -> Result<DevFrames, CudaError> {
        if n == 0 || !values.len().is_multiple_of(n) {
            return Err(CudaError::Invalid(format!(
                "frame set of {} values is not a whole number of {n}-value frames",
                values.len()
            )));
        }
        Ok(DevFrames {
            buf: self.upload(values)?,
            frames: values.len() / n,
            n,
        })
    }

    /// Copies window starts to the device; each window spans `span` frames from its start, and
    /// all of them must lie in `frames`.
    pub fn windows_to_device(
        &self,
        first: &[u32],
        span: usize,
        frames: &DevFrames,
    ) -> Result<DevWindows, CudaError> {
        if let Some(f) = first.iter().find(|&&f| f as usize + span > frames.frames) {
            return Err(CudaError::Invalid(format!(
                "a window starting at frame {f} and spanning {span} frames runs past the {} frames on the device",
                frames.frames
            )));
        }
        let len = first.len();
        let first = if first.is_empty() {
            self.zeros(1)?
        } else {
            self.upload(first)?
        };
        Ok(DevWindows {
            first,
            len,
            span,
            frames: frames.frames,
        })
    }

    /// Frames `span` (counted from each window's start) of windows `windows` of `w`, stacked
    /// into `out` as one batch `[count, t, n]` (the memory of a 2-D `[B, t, 1, ny, nx]` or
    /// 3-D `[B, 1, t, ny, nx]` batch).
    pub fn gather_windows_dev(
        &self,
        frames: &DevFrames,
        w: &DevWindows,
        windows: Range<usize>,
        span: Range<usize>,
        out: &mut DevBuf,
    ) -> Result<(), CudaError> {
        let (b0, count) = (windows.start, windows.len());
        let (off, t) = (span.start, span.len());
        if w.frames != frames.frames || b0 + count > w.len || off + t > w.span {
            return Err(CudaError::Invalid(format!(
                "gather of windows {b0}..{} frames {off}..{} from {} windows of {} frames (made for {} frames, given {})",
                b0 + count,
                off + t,
                w.len,
                w.span,
                w.frames,
                frames.frames
            )));
        }
        let total = count * t * frames.n;
        need("window batch", out.len(), total)?;
        if total == 0 {
            return Ok(());
        }
        let f = self.function(Kernel::GatherWindows)?;
        let (b0u, cu, offu, tu, n64) = (
            b0 as u32,
            count as u32,
            off as u32,
            t as u32,
            frames.n as u64,
        );
        let mut l = self.stream.launch_builder(&f);
        l.arg(&frames.buf)
            .arg(&w.first)
            .arg(out)
            .arg(&b0u)
            .arg(&cu)
            .arg(&offu)
            .arg(&tu)
            .arg(&n64);
        // SAFETY: arguments match gather_windows_f32(const float*, const unsigned*, float*,
        // unsigned, unsigned, unsigned, unsigned, unsigned long long). Windows b0..b0+count
        // exist (checked); each starts at a frame f with f + span <= frames (checked when `w`
        // was made, against this frame count), and off + t <= span, so every frame read lies
        // in `frames`; out holds count·t·n values (checked).
        unsafe { l.launch(Self::launch_config(total)) }.map_err(driver_err)?;
        Ok(())
    }
}
