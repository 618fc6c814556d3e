//! Runs a small livestream (200 viewers, 10 s, broadband links with 1% loss) with ELARA and the
//! three baselines side by side, prints the table and writes the JSON report and SVG plots to
//! the system's temporary directory.
//!
//! ```text
//! cargo run --release -p elara-simulations --example small_livestream
//! ```

use std::path::Path;

use elara_simulations::scenario::Scenario;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/livestream.toml");
    let overrides = vec!["viewers=200".to_owned(), "duration_s=10".to_owned()];
    let scenario = Scenario::load(&path, &overrides)?;
    let report = elara_simulations::run(scenario, 1, overrides, 1, &|_, _, _| {})?;
    print!("{}", report.table());
    let out = std::env::temp_dir().join("elara-small-livestream");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    for f in elara_simulations::plot::write_plots(&report, &out)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}
