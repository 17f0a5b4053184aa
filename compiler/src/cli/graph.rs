//! `polc graph PATH...`: who may talk to whom, as a picture. DOT by default
//! (`| dot -Tpng`), or `--format svg` (laid out by polc, no Graphviz
//! needed), or `--format html` (connectivity matrix plus the SVG). Numbers
//! come from `identities.lock` when there is one; it is never written.

use super::{load_checked, print_error, read_lock, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::graph;
use polc::resolve::{self, ResolveConfig};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum GraphFormat {
    /// Graphviz DOT text
    #[default]
    Dot,
    /// A self-contained SVG picture
    Svg,
    /// A standalone HTML page: connectivity matrix and picture
    Html,
}

#[derive(clap::Args)]
pub struct Args {
    /// Policy files or directories (searched for `.pol` files)
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// `dot`, `svg` or `html`
    #[arg(long, value_enum, default_value_t)]
    format: GraphFormat,
    /// Write to this file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    let frontend = match load_checked(&args.paths) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let lock = match read_lock(&args.paths) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    let resolved = match resolve::resolve(&frontend.checked, &lock, &ResolveConfig::default()) {
        Ok((resolved, _)) => resolved,
        Err(e) => {
            print_error(&e, Some("`polc show` explains resolution errors in detail"));
            return EXIT_INVALID;
        }
    };
    let picture = graph::build(&resolved, &frontend.checked, &frontend.sources);
    let title = args.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ");
    let text = match args.format {
        GraphFormat::Dot => graph::dot::render(&picture),
        GraphFormat::Svg => graph::svg::render(&picture, &title),
        GraphFormat::Html => graph::html::render(&picture, &title),
    };
    match &args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                print_error(&format!("cannot write `{}`: {e}", path.display()), None);
                return EXIT_USAGE;
            }
        }
        None => {
            use std::io::Write as _;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    EXIT_OK
}
