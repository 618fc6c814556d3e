//! `elara-sim`: run ELARA scenarios, compare reports, list the bundled scenarios.
//!
//! ```text
//! elara-sim run SCENARIO.toml [--seed N] [--json FILE] [--plots DIR] [--set key=value ...]
//! elara-sim compare A.json B.json [--fail-on-worse]
//! elara-sim list
//! ```

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::{Parser, Subcommand};
use elara_simulations::report::{Report, compare};
use elara_simulations::scenario::Scenario;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "elara-sim",
    version,
    about = "ELARA's deterministic swarm network simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (a path, or the name of a bundled scenario).
    Run {
        /// Scenario file or bundled scenario name.
        scenario: PathBuf,
        /// Seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write SVG plots into this directory.
        #[arg(long)]
        plots: Option<PathBuf>,
        /// Override a scenario field, e.g. `--set viewers=100000 --set network.loss=0.02`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Threads (default: the machine's cores): protocols run side by side, and with more
        /// threads than protocols each run's nodes are split over several. The report is the
        /// same for any value; peak memory is that of the runs in flight.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Compare two JSON reports: what got better or worse from A to B.
    Compare {
        /// The reference report.
        a: PathBuf,
        /// The new report.
        b: PathBuf,
        /// Exit with status 1 if any metric got worse.
        #[arg(long)]
        fail_on_worse: bool,
    },
    /// List the bundled scenarios.
    List,
}

fn scenario_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    if here.is_dir() {
        here
    } else {
        PathBuf::from("simulations/scenarios")
    }
}

fn resolve(p: &Path) -> PathBuf {
    if p.exists() {
        return p.to_owned();
    }
    let named = scenario_dir().join(p).with_extension("toml");
    if named.exists() { named } else { p.to_owned() }
}

fn read_report(p: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}: not an elara-sim report: {e}", p.display()))
}

fn run(
    scenario: &Path,
    seed: Option<u64>,
    json: Option<&Path>,
    plots: Option<&Path>,
    set: Vec<String>,
    threads: usize,
) -> Result<(), String> {
    let path = resolve(scenario);
    let s = Scenario::load(&path, &set).map_err(|e| e.to_string())?;
    let seed = seed.unwrap_or(s.seed);
    let protocols = s.protocols.len() as u64;
    let end_us = ((s.duration_s + s.drain_s) * 1e6) as u64;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(end_us * protocols), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:40}] {percent:>3}% ETA {eta}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let names: Vec<String> = s.protocols.clone();
    // Simulated µs reached by each protocol's run (they may run side by side).
    let reached: Vec<AtomicU64> = names.iter().map(|_| AtomicU64::new(0)).collect();
    let mut report = elara_simulations::run(s, seed, set, threads, &|name, t, _events| {
        if let Some(i) = names.iter().position(|n| n == name) {
            reached[i].store(t.min(end_us), Ordering::Relaxed);
        }
        let running: Vec<&str> = names
            .iter()
            .zip(&reached)
            .filter(|(_, r)| (1..end_us).contains(&r.load(Ordering::Relaxed)))
            .map(|(n, _)| n.as_str())
            .collect();
        bar.set_message(running.join(","));
        bar.set_position(reached.iter().map(|r| r.load(Ordering::Relaxed)).sum());
    })
    .map_err(|e| format!("{}: {e}", path.display()))?;
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let events: u64 = report.runs.iter().map(|r| r.counters.events).sum();
    print!("{}", report.table());
    let (side_by_side, per_run) = elara_simulations::plan_threads(threads, names.len());
    let used = side_by_side * per_run;
    eprintln!(
        "{events} events in {wall:.1} s wall ({used} thread{}): {:.2} M events per wall second",
        if used == 1 { "" } else { "s" },
        events as f64 / wall.max(1e-9) / 1e6
    );
    if let Some(j) = json {
        report.overrides.sort();
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(j, text + "\n").map_err(|e| format!("{}: {e}", j.display()))?;
    }
    if let Some(d) = plots {
        let files = elara_simulations::plot::write_plots(&report, d)
            .map_err(|e| format!("{}: {e}", d.display()))?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}

fn list() -> Result<(), String> {
    let dir = scenario_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for f in files {
        match Scenario::load(&f, &[]) {
            Ok(s) => println!(
                "{:<22} {}",
                f.file_stem()
                    .map(|x| x.to_string_lossy())
                    .unwrap_or_default(),
                s.description
            ),
            Err(e) => println!("{e}"),
        }
    }
    Ok(())
}

/// The glibc tunable that makes `malloc` back its heap with transparent huge pages.
#[cfg(target_os = "linux")]
const HUGE_PAGES_TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// Restarts this process with glibc's heap on transparent huge pages, unless the user set
/// `GLIBC_TUNABLES` themselves (or the restart already happened).
///
/// A large run is bound by memory latency: 100,000 nodes hold about 3 GB of small heap
/// objects, and every event touches a few of them at random. With 4 KiB pages nearly every
/// such touch also misses the TLB; with 2 MiB pages it does not. Measured on the 2-core
/// machine, `scale-100k` over 4 s: 139 s wall and 3.3 GB with 4 KiB pages, 108 s and 2.8 GB
/// with huge pages (the heap is also less fragmented). glibc reads the tunable only at
/// start-up, hence the `exec`. Where the kernel has transparent huge pages off, or the C
/// library is not glibc, the tunable is ignored and nothing changes.
#[cfg(target_os = "linux")]
fn restart_on_huge_pages() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", HUGE_PAGES_TUNABLE)
        .exec();
    // Only reached when the exec failed: carry on in this process, with small pages.
    eprintln!("note: running without huge pages ({err})");
}

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    restart_on_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            scenario,
            seed,
            json,
            plots,
            set,
            threads,
        } => {
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            });
            run(
                &scenario,
                seed,
                json.as_deref(),
                plots.as_deref(),
                set,
                threads,
            )
        }
        Command::Compare {
            a,
            b,
            fail_on_worse,
        } => (|| {
            let ra = read_report(&a)?;
            let rb = read_report(&b)?;
            let (text, worse) = compare(&ra, &rb);
            print!("{text}");
            println!("{worse} metric(s) got worse");
            if fail_on_worse && worse > 0 {
                return Err(format!("{worse} metric(s) got worse"));
            }
            Ok(())
        })(),
        Command::List => list(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elara-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
