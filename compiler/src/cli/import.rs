//! `polc import FILE... [--pods PODS.json [--namespaces NS.json]] -o DIR`:
//! Kubernetes and Cilium network policies, and pod inventories, as `.pol`
//! files (see `polc::import` and lang-spec/KUBERNETES.md).

use super::{print_error, Format, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::import::{Diagnostic, Import};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// NetworkPolicy, CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy files (YAML or JSON)
    files: Vec<PathBuf>,
    /// A pod list (`kubectl get pods -A -o json`): written as endpoints to `pods.pol`
    #[arg(long)]
    pods: Option<PathBuf>,
    /// A namespace list (`kubectl get ns -o json`): namespace labels for the pods
    #[arg(long, requires = "pods")]
    namespaces: Option<PathBuf>,
    /// The directory to write `.pol` files to (created if missing)
    #[arg(short, long)]
    output: PathBuf,
    /// Import what polc can enforce; warn about the rest and note it in the output
    #[arg(long)]
    allow_partial: bool,
    /// `human` or `json` (the files written and every diagnostic)
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn read(path: &Path) -> Result<String, u8> {
    std::fs::read_to_string(path).map_err(|e| {
        print_error(&format!("cannot read `{}`: {e}", path.display()), None);
        EXIT_USAGE
    })
}

pub fn run(args: Args) -> u8 {
    match import(&args) {
        Ok(code) | Err(code) => code,
    }
}

fn import(args: &Args) -> Result<u8, u8> {
    if args.files.is_empty() && args.pods.is_none() {
        print_error(&"nothing to import", Some("name policy files, or `--pods PODS.json`"));
        return Err(EXIT_USAGE);
    }
    let mut import = Import::new(args.allow_partial);
    for path in &args.files {
        let text = read(path)?;
        import.add_policies(path, &text);
    }
    if let Some(pods) = &args.pods {
        let pods_text = read(pods)?;
        let ns_text = args.namespaces.as_deref().map(read).transpose()?;
        let namespaces = args.namespaces.as_deref().zip(ns_text.as_deref());
        import.add_pods((pods, &pods_text), namespaces);
    }
    let (result, warnings) = import.finish();
    let (files, errors) = match result {
        Ok(files) => (files, Vec::new()),
        Err(errors) => (Vec::new(), errors),
    };
    let mut written = Vec::new();
    if errors.is_empty() {
        std::fs::create_dir_all(&args.output).map_err(|e| {
            print_error(&format!("cannot create `{}`: {e}", args.output.display()), None);
            EXIT_USAGE
        })?;
        for file in &files {
            let path = args.output.join(&file.name);
            polc::format::write_atomically(&path, &file.text).map_err(|e| {
                print_error(&format!("cannot write `{}`: {e}", path.display()), None);
                EXIT_USAGE
            })?;
            written.push(path);
        }
    }
    report(args.format, &written, &warnings, &errors);
    Ok(if errors.is_empty() { EXIT_OK } else { EXIT_INVALID })
}

fn report(format: Format, written: &[PathBuf], warnings: &[Diagnostic], errors: &[Diagnostic]) {
    match format {
        Format::Json => {
            let mut diagnostics: Vec<&Diagnostic> = errors.iter().chain(warnings).collect();
            diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            let value = serde_json::json!({
                "ok": errors.is_empty(),
                "written": written,
                "diagnostics": diagnostics,
            });
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        }
        Format::Human => {
            for d in warnings.iter().chain(errors) {
                eprintln!("{d}");
            }
            if errors.is_empty() {
                for path in written {
                    println!("wrote {}", path.display());
                }
                eprintln!("{} written, {}", count(written.len(), "file"), count(warnings.len(), "warning"));
            } else {
                eprintln!("{}, {}; nothing written", count(errors.len(), "error"), count(warnings.len(), "warning"));
            }
        }
    }
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
