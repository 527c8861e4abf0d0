//! Peak memory of one circulation-loss forward + backward (n_0 = 512, n_1 = 4096, d = 128):
//! `cargo run --release -p gyre-benches --example circulation_memory -- fused|dense [n1]`.
//! Run each form in its own process; prints the peak RSS above the RSS after set-up.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let form = args.get(1).map(String::as_str).unwrap_or("fused");
    let n1: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(4096);
    let (g0, g1, g2) = gyre_benches::circulation_groups(512, n1, 128);
    let base = gyre_benches::status_kb("VmRSS:");
    let t0 = std::time::Instant::now();
    let loss = gyre_benches::circulation_step(&g0, &g1, &g2, form == "dense").expect("step");
    let secs = t0.elapsed().as_secs_f64();
    let peak = gyre_benches::status_kb("VmHWM:");
    println!(
        "{{\"bench\": \"circulation_memory\", \"form\": \"{form}\", \"n0\": 512, \"n1\": {n1}, \"d\": 128, \"loss\": {loss}, \"seconds\": {secs:.4}, \"peak_above_setup_mb\": {:.1}}}",
        (peak - base) / 1024.0
    );
}
