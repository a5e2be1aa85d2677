//! What a listener would measure: level and pitch of decoded 16-bit samples.

#![allow(dead_code)]

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// Root mean square of the samples (0 = silence; full scale 32768).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// The frequency with the largest magnitude in `samples` (Hann-windowed FFT).
pub fn dominant_hz(samples: &[i16], rate: u32) -> f64 {
    let n = samples.len();
    if n < 16 || rate == 0 {
        return 0.0;
    }
    let mut buf: Vec<Complex<f64>> = samples
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
            Complex::new(f64::from(s) * w, 0.0)
        })
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let (bin, _) = buf[1..n / 2]
        .iter()
        .enumerate()
        .map(|(i, c)| (i + 1, c.norm()))
        .fold((0, 0.0), |best, x| if x.1 > best.1 { x } else { best });
    bin as f64 * f64::from(rate) / n as f64
}
