use strata_drift::detect::{Adwin, AdwinParams, Detector};
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self, mean: f64, std: f64) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        mean + std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}
fn main() {
    let clock: u32 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(32);
    let mut rng = Rng(0x5eed);
    let xs: Vec<f64> = (0..1_000_000)
        .map(|i| rng.normal([0.0, 1.5, -0.5, 2.0][(i / 50_000) % 4], 1.0))
        .collect();
    let mut best = f64::INFINITY;
    let mut n = 0;
    for _ in 0..40 {
        let p = AdwinParams { clock, ..AdwinParams::default() };
        let mut a = Adwin::new(p);
        let t = std::time::Instant::now();
        n = a.detections(&xs).len();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("clock {clock}: {n} detections, best {:.3} ns/value, {:.1} M/s", best * 1e9 / 1e6, 1.0 / best);
}
