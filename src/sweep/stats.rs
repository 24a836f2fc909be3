//! Means over seeds with 95% confidence intervals: the mean plus or minus Student's t
//! critical value for n - 1 degrees of freedom times the standard error (sample standard
//! deviation over the square root of n). The critical values are the standard two-sided 95%
//! table (e.g. 12.706 for 1 degree of freedom, 2.262 for 9, 1.960 in the limit).

/// A mean and its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    /// Half the interval's width: 0 for a single value.
    pub half_width: f64,
    pub n: usize,
}

/// The mean of `values` and its 95% interval; `None` for no values.
pub fn estimate(values: &[f64]) -> Option<Estimate> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some(Estimate {
            mean,
            half_width: 0.0,
            n,
        });
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let standard_error = (variance / n as f64).sqrt();
    Some(Estimate {
        mean,
        half_width: t_critical_95(n - 1) * standard_error,
        n,
    })
}

/// Student's t two-sided 95% critical value for `df` degrees of freedom (from the standard
/// table; between its rows, the next smaller degrees of freedom, which errs wide).
pub fn t_critical_95(df: usize) -> f64 {
    const TABLE: [(usize, f64); 30] = [
        (1, 12.706),
        (2, 4.303),
        (3, 3.182),
        (4, 2.776),
        (5, 2.571),
        (6, 2.447),
        (7, 2.365),
        (8, 2.306),
        (9, 2.262),
        (10, 2.228),
        (11, 2.201),
        (12, 2.179),
        (13, 2.160),
        (14, 2.145),
        (15, 2.131),
        (16, 2.120),
        (17, 2.110),
        (18, 2.101),
        (19, 2.093),
        (20, 2.086),
        (21, 2.080),
        (22, 2.074),
        (23, 2.069),
        (24, 2.064),
        (25, 2.060),
        (30, 2.042),
        (40, 2.021),
        (60, 2.000),
        (120, 1.980),
        (usize::MAX, 1.960),
    ];
    TABLE
        .iter()
        .rev()
        .find(|(d, _)| *d <= df)
        .map_or(TABLE[0].1, |(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_use_student_t() {
        let e = estimate(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(e.mean, 2.0);
        // s = 1, se = 1/sqrt(3), t(2) = 4.303.
        assert!((e.half_width - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(estimate(&[5.0]).unwrap().half_width, 0.0);
        assert!(estimate(&[]).is_none());
        assert_eq!(t_critical_95(9), 2.262);
        assert_eq!(t_critical_95(35), 2.042);
        assert_eq!(t_critical_95(100_000), 1.980);
    }
}
