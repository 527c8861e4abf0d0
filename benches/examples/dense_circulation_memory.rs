//! Peak memory of IRC dense's pixel circulation, one forward + backward (d = 128):
//! `cargo run --release -p gyre-benches --example dense_circulation_memory -- blocks|flat-fused|flat-dense B CELLS`
//! (`B` image pairs, `CELLS` cells per view: 256 for the scene protocol's 16 × 16 maps). Run each
//! shape in its own process; prints the peak RSS above the RSS after set-up as one JSON line.

use gyre_benches::DenseForm;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("blocks");
    let form = match name {
        "blocks" => DenseForm::Blocks,
        "flat-fused" => DenseForm::FlatFused,
        "flat-dense" => DenseForm::FlatDense,
        other => {
            eprintln!("dense_circulation_memory: unknown form {other:?} (blocks | flat-fused | flat-dense)");
            std::process::exit(2);
        }
    };
    let arg = |i: usize, default: usize| -> usize {
        args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let (b, cells, d) = (arg(2, 64), arg(3, 256), 128);
    let (g0, g1, g2) = gyre_benches::dense_circulation_groups(b, cells, d);
    let base = gyre_benches::status_kb("VmRSS:");
    let t0 = std::time::Instant::now();
    let loss = gyre_benches::dense_circulation_step(&g0, &g1, &g2, form).expect("step");
    let secs = t0.elapsed().as_secs_f64();
    let peak = gyre_benches::status_kb("VmHWM:");
    println!(
        "{{\"bench\": \"dense_circulation_memory\", \"form\": \"{name}\", \"pairs\": {b}, \"cells\": {cells}, \"n\": {}, \"d\": {d}, \"loss\": {loss}, \"seconds\": {secs:.4}, \"peak_above_setup_mb\": {:.1}}}",
        b * cells,
        (peak - base) / 1024.0
    );
}
