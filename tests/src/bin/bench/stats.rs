//! Medians and spreads of samples, and the small helpers every section shares.

use serde_json::{Value, json};

/// The median and the range of a set of samples.
#[derive(Clone, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Spread {
    /// Panics on no samples: a figure without samples is a workload that did not run.
    pub fn of(samples: &[f64]) -> Self {
        assert!(!samples.is_empty(), "a figure without samples");
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Self {
            median,
            min: s[0],
            max: s[n - 1],
            samples: samples.to_vec(),
        }
    }

    pub fn json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "samples": self.samples})
    }

    /// `12.3 (11.0..14.2)` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{} ({}..{})",
            num(self.median, digits),
            num(self.min, digits),
            num(self.max, digits)
        )
    }
}

/// A number with thousands separators and `digits` decimals.
pub fn num(x: f64, digits: usize) -> String {
    let text = format!("{:.*}", digits, x.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if x < 0.0 && x.abs() >= 0.5 * 10f64.powi(-(digits as i32)) {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(Spread::of(&[5.0]).median, 5.0);
    }

    #[test]
    fn numbers_read_easily() {
        assert_eq!(num(1234567.891, 1), "1,234,567.9");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(-1500.0, 0), "-1,500");
        assert_eq!(num(0.04, 1), "0.0");
    }
}
