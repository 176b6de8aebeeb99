//! Convergence-order fitting on the tail of an error curve (DESIGN.md "Measuring sample
//! quality honestly": whole-range fits of correct code miss by 0.3–0.8).

/// Errors below this are rounding, not truncation, and are left out of fits.
pub const NOISE_FLOOR: f64 = 1e-11;

/// The fitted order p of `err ≈ C N^{−p}` over the last three points above
/// [`NOISE_FLOOR`] (least squares in log–log), or `None` with fewer than two such points.
pub fn tail_order(steps: &[usize], errors: &[f64]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = steps
        .iter()
        .zip(errors)
        .filter(|(_, e)| **e > NOISE_FLOOR && e.is_finite())
        .map(|(n, e)| ((*n as f64).ln(), e.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let tail = &pts[pts.len().saturating_sub(3)..];
    let k = tail.len() as f64;
    let mx = tail.iter().map(|p| p.0).sum::<f64>() / k;
    let my = tail.iter().map(|p| p.1).sum::<f64>() / k;
    let sxy: f64 = tail.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = tail.iter().map(|p| (p.0 - mx).powi(2)).sum();
    Some(-sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_order_and_ignores_rounding() {
        let steps = [16, 32, 64, 128, 256];
        // e = 3 N^{-2} exactly, then a point lost to rounding.
        let mut errors: Vec<f64> = steps.iter().map(|n| 3.0 / (*n as f64).powi(2)).collect();
        errors[4] = 1e-14;
        let p = tail_order(&steps, &errors).expect("enough points");
        assert!((p - 2.0).abs() < 1e-12, "{p}");
        assert_eq!(tail_order(&[16], &[1.0]), None);
    }
}
